"""One op on one layer shape, ready to time or verify: the inputs (fresh random values, never
zeros) and a callable per backend. The baseline is the `torch` backend: nn.Conv2d's own kernels
(cuDNN on GPUs, oneDNN on CPUs) for the depthwise and the 1x1 convolution, called one after the
other as PyTorch users run them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from xsep import functional as XF
from xsep.bench.shapes import SeparableLayer

LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


@dataclass
class Inputs:
    x: torch.Tensor
    depthwise_weight: torch.Tensor
    pointwise_weight: torch.Tensor
    grad_output: torch.Tensor | None


def input_shape(op: str, layer: SeparableLayer, batch: int) -> tuple[int, int, int, int]:
    if op == "pointwise":  # the pointwise op alone runs on the depthwise output
        side = -(-layer.size // layer.stride)
        return (batch, layer.in_channels * layer.depth_multiplier, side, side)
    return (batch, layer.in_channels, layer.size, layer.size)


def make_inputs(op: str, layer: SeparableLayer, batch: int, dtype: torch.dtype, layout: str,
                device: torch.device, backward: bool) -> Inputs:
    fmt = LAYOUTS[layout]
    mid = layer.in_channels * layer.depth_multiplier
    x = torch.randn(input_shape(op, layer, batch), device=device, dtype=dtype).to(memory_format=fmt)
    k = layer.kernel_size
    # nn.Conv2d-like scales, so low-precision outputs stay in range
    dw = (torch.randn(mid, 1, k, k, device=device) / k).to(dtype)
    pw = (torch.randn(layer.out_channels, mid, 1, 1, device=device) / mid**0.5).to(dtype)
    grad_output = None
    if backward:
        for t in (x, dw, pw):
            t.requires_grad_()
        with torch.no_grad():
            grad_output = torch.randn_like(run(op, "torch", layer, Inputs(x, dw, pw, None)))
    return Inputs(x, dw, pw, grad_output)


def run(op: str, backend: str, layer: SeparableLayer, inputs: Inputs) -> torch.Tensor:
    """The op's output for `inputs`, computed by `backend`."""
    x, dw, pw = inputs.x, inputs.depthwise_weight, inputs.pointwise_weight
    if op == "depthwise":
        return XF.depthwise_conv2d(x, dw, None, layer.stride, "same", backend=backend)
    if op == "pointwise":
        return XF.pointwise_conv2d(x, pw, None, backend=backend)
    if op == "separable":
        return XF.separable_conv2d(x, dw, pw, None, layer.stride, "same", backend=backend)
    raise ValueError(f"unknown op {op!r}")


def leaves(op: str, inputs: Inputs) -> list[torch.Tensor]:
    """The tensors the op's backward produces gradients for."""
    used = {"depthwise": [inputs.depthwise_weight], "pointwise": [inputs.pointwise_weight],
            "separable": [inputs.depthwise_weight, inputs.pointwise_weight]}[op]
    return [inputs.x] + used


def callable_for(op: str, mode: str, backend: str, layer: SeparableLayer,
                 rotation: list[Inputs]) -> Callable[[int], None]:
    """A function of the rotation index that runs one forward (under no_grad) or one forward and
    backward of the op with `backend`."""
    if mode == "forward":
        def forward(i: int) -> None:
            with torch.no_grad():
                run(op, backend, layer, rotation[i])
        return forward

    def forward_backward(i: int) -> None:
        inputs = rotation[i]
        params = leaves(op, inputs)
        for t in params:
            t.grad = None
        torch.autograd.backward(run(op, backend, layer, inputs), inputs.grad_output, inputs=params)
    return forward_backward
