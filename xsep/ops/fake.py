"""Fake (meta) kernels of the nine ops, for every namespace that implements them: shapes, dtypes and
memory formats without computing anything, after the same argument checks as the real kernels
(xsep/ops/checks.py), so that meta and fake tensors are refused as real ones would be rather than
traced into a graph that fails later.

Memory format rule shared with the kernels: outputs and input gradients take the input's suggested
memory format (channels_last in, channels_last out); weight gradients are contiguous.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from xsep.ops import checks


def empty_like_format(like: torch.Tensor, shape) -> torch.Tensor:
    """An uninitialised tensor of `shape` in `like`'s dtype, device and suggested memory format."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=suggest_memory_format(like))


def _weight_like(weight: torch.Tensor) -> torch.Tensor:
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


def depthwise_conv2d(input, weight, bias, stride, padding, dilation, input_activation):
    g = checks.depthwise_conv2d(input, weight, bias, stride, padding, dilation, input_activation)
    return empty_like_format(input, (g.N, g.OC, g.Ho, g.Wo))


def depthwise_conv2d_grad_input(grad_output, input, weight, stride, padding, dilation, input_activation):
    checks.depthwise_conv2d_backward("xsep.depthwise_conv2d_grad_input", grad_output, input, weight, stride,
                                     padding, dilation, input_activation)
    return empty_like_format(input, input.shape)


def depthwise_conv2d_grad_weight(grad_output, input, weight, stride, padding, dilation, input_activation):
    checks.depthwise_conv2d_backward("xsep.depthwise_conv2d_grad_weight", grad_output, input, weight, stride,
                                     padding, dilation, input_activation)
    return _weight_like(weight)


def depthwise_conv2d_backward(grad_output, input, weight, stride, padding, dilation, input_activation):
    checks.depthwise_conv2d_backward("xsep.depthwise_conv2d_backward", grad_output, input, weight, stride,
                                     padding, dilation, input_activation)
    return empty_like_format(input, input.shape), _weight_like(weight)


def pointwise_conv2d(input, weight, bias):
    checks.pointwise_conv2d(input, weight, bias)
    n, _, h, w = input.shape
    return empty_like_format(input, (n, weight.shape[0], h, w))


def pointwise_conv2d_grad_input(grad_output, input, weight):
    checks.pointwise_conv2d_backward("xsep.pointwise_conv2d_grad_input", grad_output, input, weight)
    return empty_like_format(input, input.shape)


def pointwise_conv2d_grad_weight(grad_output, input, weight):
    checks.pointwise_conv2d_backward("xsep.pointwise_conv2d_grad_weight", grad_output, input, weight)
    return _weight_like(weight)


def separable_conv2d(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation, input_activation,
                     mid_activation, depthwise_bias=None):
    g = checks.separable_conv2d(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                                input_activation, mid_activation, depthwise_bias)
    return empty_like_format(input, (g.N, pointwise_weight.shape[0], g.Ho, g.Wo))


def separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                              input_activation, mid_activation, depthwise_bias=None):
    g = checks.separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding,
                                         dilation, input_activation, mid_activation, depthwise_bias)
    return (empty_like_format(input, input.shape), _weight_like(depthwise_weight), _weight_like(pointwise_weight),
            input.new_empty((g.OC if depthwise_bias is not None else 0,)))


# Every op of xsep/ops/schemas.py's SCHEMAS, by name.
FAKES = {
    "depthwise_conv2d": depthwise_conv2d,
    "depthwise_conv2d_grad_input": depthwise_conv2d_grad_input,
    "depthwise_conv2d_grad_weight": depthwise_conv2d_grad_weight,
    "depthwise_conv2d_backward": depthwise_conv2d_backward,
    "pointwise_conv2d": pointwise_conv2d,
    "pointwise_conv2d_grad_input": pointwise_conv2d_grad_input,
    "pointwise_conv2d_grad_weight": pointwise_conv2d_grad_weight,
    "separable_conv2d": separable_conv2d,
    "separable_conv2d_backward": separable_conv2d_backward,
}
