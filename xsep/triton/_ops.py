"""xsep's Triton kernels as torch ops: torch.ops.xsep_triton.* (the names of the C++ ops in
xsep/ops/schemas.py), opaque torch.library.custom_op's with the fake kernels and autograd of every
namespace (xsep/ops/fake.py, xsep/ops/autograd.py), so they run under torch.compile(fullgraph=True) and opcheck.

(torch.library.triton_op + wrap_triton, which would let Inductor see the kernels, failed under
torch.compile on CPU tensors with the interpreter: "Attempted to access the data pointer on an
invalid python storage". The opaque form works in both places.)

The kernel modules are imported on first call: Triton decides at decoration time whether a kernel
is compiled or interpreted (TRITON_INTERPRET), so they must not be imported before that is known.
"""

from __future__ import annotations

import contextlib

import torch

from xsep import ops
from xsep.ops import checks
from xsep.ops.schemas import SCHEMAS, activation_code

NS = "xsep_triton"

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
    checks.depthwise_conv2d(input, weight, bias, stride, padding, dilation, input_activation)
    with _on(input):
        return k.forward(input, weight, bias, stride, padding, dilation, input_activation == "relu")


def _depthwise_backward(name: str):
    """depthwise_conv2d_grad_input / _grad_weight: the kernel module's function of the same name."""
    op = f"depthwise_conv2d_{name}"

    @_op(op)
    def backward(grad_output, input, weight, stride, padding, dilation, input_activation):
        from xsep.triton import depthwise_conv2d as k

        stride, padding, dilation = _lists(stride, padding, dilation)
        checks.depthwise_conv2d_backward(f"xsep.{op}", grad_output, input, weight, stride, padding, dilation,
                                         input_activation)
        with _on(input):
            return getattr(k, name)(grad_output, input, weight, stride, padding, dilation, input_activation == "relu")
    return backward


depthwise_conv2d_grad_input = _depthwise_backward("grad_input")
depthwise_conv2d_grad_weight = _depthwise_backward("grad_weight")


@_op("depthwise_conv2d_backward")
def depthwise_conv2d_backward(grad_output, input, weight, stride, padding, dilation, input_activation):
    from xsep.triton import depthwise_conv2d as k

    stride, padding, dilation = _lists(stride, padding, dilation)
    checks.depthwise_conv2d_backward("xsep.depthwise_conv2d_backward", grad_output, input, weight, stride, padding,
                                     dilation, input_activation)
    relu = input_activation == "relu"
    with _on(input):  # the two kernels one after the other
        return (k.grad_input(grad_output, input, weight, stride, padding, dilation, relu),
                k.grad_weight(grad_output, input, weight, stride, padding, dilation, relu))


# --------------------------------------------------------------------------------------------------
# Pointwise


@_op("pointwise_conv2d")
def pointwise_conv2d(input, weight, bias):
    from xsep.triton import pointwise_conv2d as k

    checks.pointwise_conv2d(input, weight, bias)
    with _on(input):
        return k.forward(input, weight, bias)


def _pointwise_backward(name: str):
    """pointwise_conv2d_grad_input / _grad_weight: the kernel module's function of the same name."""
    op = f"pointwise_conv2d_{name}"

    @_op(op)
    def backward(grad_output, input, weight):
        from xsep.triton import pointwise_conv2d as k

        checks.pointwise_conv2d_backward(f"xsep.{op}", grad_output, input, weight)
        with _on(input):
            return getattr(k, name)(grad_output, input, weight)
    return backward


pointwise_conv2d_grad_input = _pointwise_backward("grad_input")
pointwise_conv2d_grad_weight = _pointwise_backward("grad_weight")


# --------------------------------------------------------------------------------------------------
# Separable (fused)


@_op("separable_conv2d")
def separable_conv2d(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation, input_activation,
                     mid_activation, depthwise_bias=None):
    from xsep.triton import separable_conv2d as k

    stride, padding, dilation = _lists(stride, padding, dilation)
    checks.separable_conv2d(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                            input_activation, mid_activation, depthwise_bias)
    with _on(input):
        return k.forward(input, depthwise_weight, pointwise_weight, bias, stride, padding, dilation,
                         input_activation == "relu", activation_code(mid_activation), depthwise_bias)


@_op("separable_conv2d_backward")
def separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                              input_activation, mid_activation, depthwise_bias=None):
    from xsep.triton import separable_conv2d as k

    stride, padding, dilation = _lists(stride, padding, dilation)
    checks.separable_conv2d_backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding,
                                     dilation, input_activation, mid_activation, depthwise_bias)
    with _on(input):
        return k.backward(grad_output, input, depthwise_weight, pointwise_weight, stride, padding, dilation,
                          input_activation == "relu", activation_code(mid_activation), depthwise_bias)


# Fake kernels and autograd (the backward ops of this namespace)

ops.register(NS)
