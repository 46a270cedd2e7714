"""The Python half of the C++-defined ops in torch.ops.xsep: fake (meta) kernels for every op,
backward ops included, and autograd formulas. Runs once, right after the library is loaded.

Memory format rule shared with the kernels: outputs and input gradients take the input's
suggested memory format (channels_last in, channels_last out); weight gradients are contiguous.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

def _check_like(op: str, input: torch.Tensor, **tensors) -> None:
    """The real kernels' device and dtype checks (csrc/common/conv_args.cpp), so that meta and fake
    tensors are refused as the real ones would be, rather than traced into a graph that fails later."""
    for name, t in tensors.items():
        if t is None:
            continue
        torch._check(t.device == input.device, lambda: f"xsep.{op}: {name} is on {t.device} but input is on "
                                                       f"{input.device}; all tensors must be on one device")
        torch._check_type(t.dtype == input.dtype, lambda: f"xsep.{op}: {name} has dtype {t.dtype} but input has "
                                                          f"dtype {input.dtype}; all tensors must have one dtype")


def _out_size(size: int, k: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def _empty_like_format(like: torch.Tensor, shape) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=suggest_memory_format(like))


def _depthwise_out_shape(input, weight, stride, padding, dilation):
    n, c, h, w = input.shape
    torch._check(c > 0 and weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] % c == 0,
                 lambda: f"weight must be [C*M, 1, kh, kw] for C={c}, got {list(weight.shape)}")
    kh, kw = weight.shape[2], weight.shape[3]
    ho = _out_size(h, kh, stride[0], padding[0], padding[1], dilation[0])
    wo = _out_size(w, kw, stride[1], padding[2], padding[3], dilation[1])
    torch._check(ho >= 1 and wo >= 1, lambda: "the kernel is larger than the padded input")
    return n, weight.shape[0], ho, wo


def _fake_depthwise(input, weight, bias, stride, padding, dilation, input_activation):
    _check_like("depthwise_conv2d", input, weight=weight, bias=bias)
    return _empty_like_format(input, _depthwise_out_shape(input, weight, stride, padding, dilation))


def _fake_depthwise_grad_input(grad_output, input, weight, stride, padding, dilation, input_activation):
    _check_like("depthwise_conv2d_grad_input", input, weight=weight, grad_output=grad_output)
    return _empty_like_format(input, input.shape)


def _fake_depthwise_grad_weight(grad_output, input, weight, stride, padding, dilation, input_activation):
    _check_like("depthwise_conv2d_grad_weight", input, weight=weight, grad_output=grad_output)
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


def _fake_pointwise(input, weight, bias):
    _check_like("pointwise_conv2d", input, weight=weight, bias=bias)
    n, _, h, w = input.shape
    return _empty_like_format(input, (n, weight.shape[0], h, w))


def _fake_pointwise_grad_input(grad_output, input, weight):
    _check_like("pointwise_conv2d_grad_input", input, weight=weight, grad_output=grad_output)
    return _empty_like_format(input, input.shape)


def _fake_pointwise_grad_weight(grad_output, input, weight):
    _check_like("pointwise_conv2d_grad_weight", input, weight=weight, grad_output=grad_output)
    return torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)


def _fake_separable(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                    input_activation, mid_activation):
    _check_like("separable_conv2d", input, depthwise_weight=depthwise_weight, pointwise_weight=pointwise_weight,
                bias=bias)
    n, _, ho, wo = _depthwise_out_shape(input, depthwise_weight, stride, padding, dilation)
    return _empty_like_format(input, (n, pointwise_weight.shape[0], ho, wo))


def _fake_separable_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding,
                             dilation, input_activation, mid_activation):
    _check_like("separable_conv2d_backward", input, depthwise_weight=depthwise_weight,
                pointwise_weight=pointwise_weight, grad_output=grad_output)
    return (
        _empty_like_format(input, input.shape),
        torch.empty(depthwise_weight.shape, dtype=input.dtype, device=input.device),
        torch.empty(pointwise_weight.shape, dtype=input.dtype, device=input.device),
    )


# Autograd. Backward formulas call the backward ops, so each backend's kernels serve both passes.

def _bias_grad(grad_output):
    return grad_output.sum(dim=(0, 2, 3))


def _setup_depthwise(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, input_activation = inputs
    ctx.save_for_backward(input, weight)
    ctx.conv_args = (stride, padding, dilation, input_activation)
    ctx.has_bias = bias is not None


def _setup_pointwise(ctx, inputs, output):
    input, weight, bias = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None


def _setup_separable(ctx, inputs, output):
    input, dw_weight, pw_weight, bias, stride, padding, dilation, input_act, mid_act = inputs
    ctx.save_for_backward(input, dw_weight, pw_weight)
    ctx.conv_args = (stride, padding, dilation, input_act, mid_act)
    ctx.has_bias = bias is not None


def _backward_formulas(namespace: str):
    """The three forward ops' backward formulas, calling the backward ops of `namespace`
    (torch.ops.xsep for the compiled library, torch.ops.xsep_triton for the Triton backend)."""

    def ops():
        return getattr(torch.ops, namespace)

    def depthwise(ctx, grad_output):
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = ops().depthwise_conv2d_grad_input(grad_output, input, weight, *ctx.conv_args)
        if ctx.needs_input_grad[1]:
            grad_weight = ops().depthwise_conv2d_grad_weight(grad_output, input, weight, *ctx.conv_args)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = _bias_grad(grad_output)
        return grad_input, grad_weight, grad_bias, None, None, None, None

    def pointwise(ctx, grad_output):
        input, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = ops().pointwise_conv2d_grad_input(grad_output, input, weight)
        if ctx.needs_input_grad[1]:
            grad_weight = ops().pointwise_conv2d_grad_weight(grad_output, input, weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = _bias_grad(grad_output)
        return grad_input, grad_weight, grad_bias

    def separable(ctx, grad_output):
        input, dw_weight, pw_weight = ctx.saved_tensors
        grads = [None] * 9
        if any(ctx.needs_input_grad[:3]):
            # One fused pass gives all three: the depthwise output is recomputed, never stored.
            results = ops().separable_conv2d_backward(grad_output, input, dw_weight, pw_weight, *ctx.conv_args)
            for i, g in enumerate(results):
                grads[i] = g if ctx.needs_input_grad[i] else None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grads[3] = _bias_grad(grad_output)
        return tuple(grads)

    return {"depthwise_conv2d": (depthwise, _setup_depthwise), "pointwise_conv2d": (pointwise, _setup_pointwise),
            "separable_conv2d": (separable, _setup_separable)}


def _no_double_backward(name: str):
    def backward(ctx, *grads):
        raise RuntimeError(f"xsep.{name} has no derivative: double backward (create_graph=True through xsep ops) "
                           "is not supported")
    return backward


BACKWARD_OPS = ("depthwise_conv2d_grad_input", "depthwise_conv2d_grad_weight", "pointwise_conv2d_grad_input",
                "pointwise_conv2d_grad_weight", "separable_conv2d_backward")

FAKES = {
    "depthwise_conv2d": _fake_depthwise,
    "depthwise_conv2d_grad_input": _fake_depthwise_grad_input,
    "depthwise_conv2d_grad_weight": _fake_depthwise_grad_weight,
    "pointwise_conv2d": _fake_pointwise,
    "pointwise_conv2d_grad_input": _fake_pointwise_grad_input,
    "pointwise_conv2d_grad_weight": _fake_pointwise_grad_weight,
    "separable_conv2d": _fake_separable,
    "separable_conv2d_backward": _fake_separable_backward,
}


def register(namespace: str) -> None:
    """Fake kernels and autograd for the eight ops of `namespace` (defined with xsep's schemas)."""
    for name, fn in FAKES.items():
        torch.library.register_fake(f"{namespace}::{name}", fn)
    for name, (backward, setup) in _backward_formulas(namespace).items():
        torch.library.register_autograd(f"{namespace}::{name}", backward, setup_context=setup)
    # Backpropagating through a backward op (a second derivative) raises, rather than PyTorch's
    # default for ops without a formula: a warning and silently missing gradients.
    for name in BACKWARD_OPS:
        torch.library.register_autograd(f"{namespace}::{name}", _no_double_backward(name))


_registered = False


def register_all() -> None:
    """register() for the compiled library's ops (torch.ops.xsep), once."""
    global _registered
    if not _registered:
        register("xsep")
        _registered = True
