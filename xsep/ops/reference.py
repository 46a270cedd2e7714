"""The pure-PyTorch implementation of every xsep op: the test oracle, the `torch` backend, and the
baseline the benchmarks compare against (cuDNN on GPUs, oneDNN on CPUs).

Arguments are already normalised (see xsep/functional.py): stride and dilation are pairs, padding
is (top, bottom, left, right), activations are names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from xsep.ops.schemas import MID_ACTIVATIONS

# Each activation and its derivative, with PyTorch's choices at the kinks (relu, relu6: 0 at 0 and 6;
# elu with alpha = 1: exp(x) at and below 0).
_ACTIVATIONS = {
    "none": (lambda x: x, torch.ones_like),
    "relu": (F.relu, lambda x: (x > 0).to(x.dtype)),
    "relu6": (F.relu6, lambda x: ((x > 0) & (x < 6)).to(x.dtype)),
    "elu": (F.elu, lambda x: torch.where(x > 0, torch.ones_like(x), torch.exp(x))),
}


def _lookup(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; expected one of {MID_ACTIVATIONS}")
    return _ACTIVATIONS[name]


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    return _lookup(name)[0](x)


def activation_derivative(x: torch.Tensor, name: str) -> torch.Tensor:
    """d activation(x) / dx."""
    return _lookup(name)[1](x)


def depthwise_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    input_activation: str = "none",
) -> torch.Tensor:
    top, bottom, left, right = padding
    x = activation(input, input_activation)
    if top == bottom and left == right:  # conv2d pads symmetrically itself: no extra copy
        conv_padding = (top, left)
    else:
        x = F.pad(x, (left, right, top, bottom))
        conv_padding = (0, 0)
    return F.conv2d(x, weight, bias, tuple(stride), conv_padding, tuple(dilation), groups=input.shape[1])


def pointwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if weight.dim() == 2:
        weight = weight[:, :, None, None]
    return F.conv2d(input, weight, bias)


def separable_conv2d(
    input: torch.Tensor,
    depthwise_weight: torch.Tensor,
    pointwise_weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    input_activation: str = "none",
    mid_activation: str = "none",
    depthwise_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    mid = depthwise_conv2d(input, depthwise_weight, depthwise_bias, stride, padding, dilation, input_activation)
    return pointwise_conv2d(activation(mid, mid_activation), pointwise_weight, bias)
