"""xsep's Triton kernels as torch ops: torch.ops.xsep_triton.* (the names of the C++ ops in
csrc/xsep.cpp), opaque torch.library.custom_op's with fake kernels (shared with the native ops:
xsep/ops/_register.py) and autograd, so they run under torch.compile(fullgraph=True) and opcheck.

(torch.library.triton_op + wrap_triton, which would let Inductor see the kernels, failed under
torch.compile on CPU tensors with the interpreter: "Attempted to access the data pointer on an
invalid python storage". The opaque form works in both places.)

The kernel modules are imported on first call: Triton decides at decoration time whether a kernel
is compiled or interpreted (TRITON_INTERPRET), so they must not be imported before that is known.
"""

from __future__ import annotations

import contextlib

import torch

from xsep.ops import _register
from xsep.triton import _checks as checks

NS = "xsep_triton"

# The schemas of the C++ ops (csrc/xsep.cpp).
SCHEMAS = {
    "depthwise_conv2d": ("(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
                         "int[2] dilation, str input_activation) -> Tensor"),
    "depthwise_conv2d_grad_input": ("(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[4] padding, "
                                    "int[2] dilation, str input_activation) -> Tensor"),
    "depthwise_conv2d_grad_weight": ("(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[4] padding, "
                                     "int[2] dilation, str input_activation) -> Tensor"),
    "pointwise_conv2d": "(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
    "pointwise_conv2d_grad_input": "(Tensor grad_output, Tensor input, Tensor weight) -> Tensor",
    "pointwise_conv2d_grad_weight": "(Tensor grad_output, Tensor input, Tensor weight) -> Tensor",
    "separable_conv2d": ("(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, Tensor? bias, "
                         "int[2] stride, int[4] padding, int[2] dilation, str input_activation, "
                         "str mid_activation) -> Tensor"),
    "separable_conv2d_backward": ("(Tensor grad_output, Tensor input, Tensor depthwise_weight, "
                                  "Tensor pointwise_weight, int[2] stride, int[4] padding, int[2] dilation, "
                                  "str input_activation, str mid_activation) -> (Tensor, Tensor, Tensor)"),
}


def _op(name: str):
    return torch.library.custom_op(f"{NS}::{name}", mutates_args=(), schema=SCHEMAS[name])


def _lists(stride, padding, dilation):
    return [int(v) for v in stride], [int(v) for v in padding], [int(v) for v in dilation]


def _on(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' one."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------------
# Depthwise


@_op("depthwise_conv2d")
def depthwise_conv2d(input, weight, bias, stride, padding, dilation, input_activation):
    from xsep.triton import depthwise_conv2d as k

    stride, padding, dilation = _lists(stride, padding, dilation)
    checks.depthwise("xsep.depthwise_conv2d", input, weight, bias, stride, padding, dilation, input_activation)
    with _on(input):
        return k.forward(input, weight, bias, stride, padding, dilation, input_activation == "relu")


@_op("depthwise_conv2d_grad_input")
def depthwise_conv2d_grad_input(grad_output, input, weight, stride, padding, dilation, input_activation):
    from xsep.triton import depthwise_conv2d as k

    op = "xsep.depthwise_conv2d_grad_input"
    stride, padding, dilation = _lists(stride, padding, dilation)
    g = checks.depthwise(op, input, weight, None, stride, padding, dilation, input_activation)
    checks.grad_output(op, grad_output, input, g.OC, g.Ho, g.Wo)
    with _on(input):
        return k.grad_input(grad_output, input, weight, stride, padding, dilation, input_activation == "relu")


@_op("depthwise_conv2d_grad_weight")
def depthwise_conv2d_grad_weight(grad_output, input, weight, stride, padding, dilation, input_activation):
    from xsep.triton import depthwise_conv2d as k

    op = "xsep.depthwise_conv2d_grad_weight"
    stride, padding, dilation = _lists(stride, padding, dilation)
    g = checks.depthwise(op, input, weight, None, stride, padding, dilation, input_activation)
    checks.grad_output(op, grad_output, input, g.OC, g.Ho, g.Wo)
    with _on(input):
        return k.grad_weight(grad_output, input, weight, stride, padding, dilation, input_activation == "relu")


# --------------------------------------------------------------------------------------------------
# Pointwise


@_op("pointwise_conv2d")
def pointwise_conv2d(input, weight, bias):
    from xsep.triton import pointwise_conv2d as k

    checks.pointwise("xsep.pointwise_conv2d", input, weight, bias)
    with _on(input):
        return k.forward(input, weight, bias)


@_op("pointwise_conv2d_grad_input")
def pointwise_conv2d_grad_input(grad_output, input, weight):
    from xsep.triton import pointwise_conv2d as k

    op = "xsep.pointwise_conv2d_grad_input"
    checks.pointwise(op, input, weight, None)
    checks.grad_output(op, grad_output, input, weight.shape[0], input.shape[2], input.shape[3])
    with _on(input):
        return k.grad_input(grad_output, input, weight)


@_op("pointwise_conv2d_grad_weight")
def pointwise_conv2d_grad_weight(grad_output, input, weight):
    from xsep.triton import pointwise_conv2d as k

    op = "xsep.pointwise_conv2d_grad_weight"
    checks.pointwise(op, input, weight, None)
    checks.grad_output(op, grad_output, input, weight.shape[0], input.shape[2], input.shape[3])
    with _on(input):
        return k.grad_weight(grad_output, input, weight)


# --------------------------------------------------------------------------------------------------
# Separable (fused)


@_op("separable_conv2d")
def separable_conv2d(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation, input_activation,
                     mid_activation):
    from xsep.triton import _common
    from xsep.triton import separable_conv2d as k

    op = "xsep.separable_conv2d"
    stride, padding, dilation = _lists(stride, padding, dilation)
    g = checks.depthwise(op, input, depthwise_weight, None, stride, padding, dilation, input_activation)
    checks.pointwise_weight(op, g, input, pointwise_weight, bias)
    checks.activation(op, "mid_activation", mid_activation, input_side=False)
    with _on(input):
        return k.forward(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                         input_activation == "relu", _common.mid_code(mid_activation))


@_op("separable_conv2d_backward")
def separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                              input_activation, mid_activation):
    from xsep.triton import _common
    from xsep.triton import separable_conv2d as k

    op = "xsep.separable_conv2d_backward"
    stride, padding, dilation = _lists(stride, padding, dilation)
    g = checks.depthwise(op, input, depthwise_weight, None, stride, padding, dilation, input_activation)
    checks.pointwise_weight(op, g, input, pointwise_weight, None)
    checks.grad_output(op, grad_output, input, pointwise_weight.shape[0], g.Ho, g.Wo)
    checks.activation(op, "mid_activation", mid_activation, input_side=False)
    with _on(input):
        return k.backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                          input_activation == "relu", _common.mid_code(mid_activation))


# --------------------------------------------------------------------------------------------------
# Fake kernels (xsep/ops/_register.py's) and autograd (the backward ops of this namespace)

_register.register("xsep_triton")


class Ops:
    """The three ops with normalised arguments (xsep.ops.implementation('triton'))."""

    @staticmethod
    def depthwise_conv2d(*args):
        return torch.ops.xsep_triton.depthwise_conv2d(*args)

    @staticmethod
    def pointwise_conv2d(*args):
        return torch.ops.xsep_triton.pointwise_conv2d(*args)

    @staticmethod
    def separable_conv2d(*args):
        return torch.ops.xsep_triton.separable_conv2d(*args)
