"""Pieces shared by xsep's modules: nn.Conv2d's initialisation and argument normalisation."""

from __future__ import annotations

import math

import torch
from torch import nn

from xsep.ops import checks


class NotScriptable:
    """torch.jit.script cannot compile xsep's forward (it picks a backend at run time and calls the ops
    through Python): say so, and what works instead, rather than fail on an annotation deep inside.
    torch.jit.script calls __prepare_scriptable__ on every module before compiling anything."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"xsep.{type(self).__name__} cannot be compiled by torch.jit.script (its forward picks a backend at "
            "run time). Use torch.jit.trace(model, example_input) for TorchScript, or torch.compile, "
            "torch.export or torch.onnx.export.")


def conv_init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """nn.Conv2d.reset_parameters: Kaiming-uniform weight, bias uniform in +-1/sqrt(fan_in)."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound)


def check_channels(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def conv_args(kernel_size, stride, padding, dilation):
    """Normalised (kernel_size, stride, padding, dilation); padding stays 'same' until the input
    size is known."""
    kernel_size = checks.pair(kernel_size, "kernel_size", 1)
    stride = checks.pair(stride, "stride", 1)
    dilation = checks.pair(dilation, "dilation", 1)
    if not (isinstance(padding, str) and padding == "same"):
        if isinstance(padding, (list, tuple)):
            padding = tuple(padding)
        top, _, left, _ = checks.normalize_padding(padding, None, kernel_size, stride, dilation)  # validates
        if not isinstance(padding, str) and not (isinstance(padding, tuple) and len(padding) == 4):
            padding = (top, left)  # an int or an (h, w) pair is kept as a pair, as nn.Conv2d does
    return kernel_size, stride, padding, dilation


def op_padding(padding) -> tuple[int, int, int, int] | None:
    """A module's `padding` as the ops take it (top, bottom, left, right), or None where only the
    input tells ('same') or it is not in a form conv_args leaves (the public path then checks it)."""
    if type(padding) is tuple and len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    if type(padding) is tuple and len(padding) == 4:
        return padding
    return None


def conv_repr(module, first: str) -> str:
    """nn.Conv2d-style extra_repr: non-default arguments only."""
    s = first + f", kernel_size={module.kernel_size}, stride={module.stride}"
    if module.padding not in (0, (0, 0), (0, 0, 0, 0)):
        s += f", padding={module.padding!r}"
    if module.dilation != (1, 1):
        s += f", dilation={module.dilation}"
    if module.depth_multiplier != 1:
        s += f", depth_multiplier={module.depth_multiplier}"
    return s
