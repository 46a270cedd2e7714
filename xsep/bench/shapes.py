"""Layer shapes to verify and time, derived from the models themselves (not a second hand-written
list): a forward pass on the meta device (no memory, no compute) records the input size of every
xsep.SeparableConv2d in network order."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SeparableLayer:
    name: str
    size: int          # input height = width
    in_channels: int
    out_channels: int
    kernel_size: int = 3
    stride: int = 1
    depth_multiplier: int = 1

    @property
    def key(self) -> tuple:
        """What makes two layers the same benchmark case."""
        return (self.size, self.in_channels, self.out_channels, self.kernel_size, self.stride, self.depth_multiplier)

    def describe(self) -> str:
        return f"{self.size}x{self.size} {self.in_channels}->{self.out_channels} k{self.kernel_size}s{self.stride}"


def separable_layers(model: nn.Module, image_size: int, in_chans: int = 3) -> list[SeparableLayer]:
    """Every xsep.SeparableConv2d that `model` runs on a `image_size` square input, in call order.
    Only square kernels, strides and inputs are described (all the models here have them)."""
    from xsep.nn import SeparableConv2d

    if any(p.device.type != "meta" for p in model.parameters()):
        model = copy.deepcopy(model).to("meta")  # leave the caller's model where it is
    found: list[SeparableLayer] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module, args):
        (x,) = args[:1]
        square = module.kernel_size[0] == module.kernel_size[1] and module.stride[0] == module.stride[1]
        if x.shape[2] != x.shape[3] or not square:
            raise ValueError(f"{names[module]}: only square layers are described, got input {tuple(x.shape)}")
        found.append(SeparableLayer(names[module], int(x.shape[2]), module.in_channels, module.out_channels,
                                    module.kernel_size[0], module.stride[0], module.depth_multiplier))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, SeparableConv2d)]
    try:
        with torch.no_grad():
            model(torch.empty(1, in_chans, image_size, image_size, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return found


def xception_separable_layers() -> list[SeparableLayer]:
    """Xception's 34 separable convolutions at its 299x299 input (Chollet 2017), in network order."""
    from xsep.models import xception

    with torch.device("meta"):
        model = xception(backend="torch")
    return separable_layers(model, 299)


def unique_layers(layers: list[SeparableLayer]) -> list[tuple[SeparableLayer, int]]:
    """Distinct shapes (the first layer of each) with how often each occurs, in network order."""
    counts: dict[tuple, list] = {}
    for layer in layers:
        counts.setdefault(layer.key, [layer, 0])[1] += 1
    return [(layer, n) for layer, n in counts.values()]


MODELS = {"xception": xception_separable_layers}


def select_layers(layers: list[tuple[SeparableLayer, int]], specs: list[str]) -> list[tuple[SeparableLayer, int]]:
    """The entries of `layers` ((layer, count) pairs, e.g. from unique_layers) whose input size and
    channels match one of `specs`, each 'SIZE:IN:OUT' (e.g. '19:728:728'), in the order of `layers`.
    Raises ValueError for a malformed spec or one that matches no layer, naming the shapes there are."""
    wanted = []
    for spec in specs:
        parts = spec.strip().split(":")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"expected a layer as SIZE:IN:OUT (e.g. 19:728:728), got {spec!r}")
        wanted.append(tuple(int(p) for p in parts))
    shape = lambda layer: (layer.size, layer.in_channels, layer.out_channels)  # noqa: E731
    missing = [s for s, w in zip(specs, wanted) if all(shape(layer) != w for layer, _ in layers)]
    if missing:
        there = ", ".join(dict.fromkeys("%d:%d:%d" % shape(layer) for layer, _ in layers))
        raise ValueError(f"no layer matches {', '.join(missing)}; the layers are {there}")
    return [(layer, n) for layer, n in layers if shape(layer) in wanted]
