"""Argument checks and output sizes of xsep's ops, written once in Python. Two layers:

- the public API's (`xsep.functional`, the modules): user-facing arguments (ints or pairs,
  'same'/'valid' padding, activation names or None) are checked, then normalised to the ops'
  form; errors name the argument (ValueError for values and shapes, TypeError for types);
- the ops' own, on normalised arguments: used by the Triton ops (torch.ops.xsep_triton) and by the
  fake kernels of every namespace, with the conditions, error types and messages of the compiled
  ops (csrc/common/conv_args.cpp), so that every backend, meta tensors included, refuses the same
  calls the same way. tests/test_errors.py keeps the two languages in step.

The output size formula (`output_size`) is the one every backend's output shapes come from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from xsep.ops.schemas import INPUT_ACTIVATIONS, MID_ACTIVATIONS

IntOrPair = int | Sequence[int]
Padding = int | Sequence[int] | str
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def output_size(size: int, k: int, stride: int, pad_before: int, pad_after: int, dilation: int) -> int:
    """Output length along one dimension (nn.Conv2d's formula, with asymmetric padding)."""
    return (size + pad_before + pad_after - dilation * (k - 1) - 1) // stride + 1


def depthwise_output_shape(input: torch.Tensor, weight: torch.Tensor, stride, padding, dilation):
    """[N, C * M, Ho, Wo] of a depthwise convolution on normalised arguments (no checks)."""
    kh, kw = weight.shape[2], weight.shape[3]
    return (input.shape[0], weight.shape[0], output_size(input.shape[2], kh, stride[0], padding[0], padding[1],
                                                         dilation[0]),
            output_size(input.shape[3], kw, stride[1], padding[2], padding[3], dilation[1]))


# --------------------------------------------------------------------------------------------------
# The public API's checks and normalisation


def _plain_ints(value, length: int, minimum: int) -> bool:
    """A tuple of `length` ints (not bools) each >= minimum: the form modules and the ops already hold,
    checked without the abstract-class isinstance tests below (a few microseconds a call, comparable to
    a small layer's kernel)."""
    return type(value) is tuple and len(value) == length and all(type(v) is int and v >= minimum for v in value)


def pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
    if type(value) is int:
        value = (value, value)
    if _plain_ints(value, 2, minimum):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {tuple(value)}")
    return tuple(value)


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one dimension: (before, after), extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


_PADDING_FORMS = "padding must be an int, an (h, w) pair, a (top, bottom, left, right) 4-tuple, 'valid' or 'same'"


def normalize_padding(padding: Padding, input_size: Sequence[int] | None, kernel_size: Sequence[int],
                      stride: Sequence[int], dilation: Sequence[int]) -> tuple[int, int, int, int]:
    """Any accepted `padding` as (top, bottom, left, right); 'same' needs the input's (H, W)."""
    if type(padding) is int and padding >= 0:
        return (padding,) * 4
    if _plain_ints(padding, 4, 0):
        return padding
    if _plain_ints(padding, 2, 0):
        return (padding[0], padding[0], padding[1], padding[1])
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            h, w = input_size
            return (*same_padding(h, kernel_size[0], stride[0], dilation[0]),
                    *same_padding(w, kernel_size[1], stride[1], dilation[1]))
        raise ValueError(f"{_PADDING_FORMS}, got {padding!r}")
    if isinstance(padding, Sequence) and len(padding) not in (2, 4):
        raise ValueError(f"{_PADDING_FORMS}, got {padding!r}")
    if isinstance(padding, Sequence) and len(padding) == 4:
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in padding):
            raise ValueError(f"padding must hold ints, got {padding!r}")
        if min(padding) < 0:
            raise ValueError(f"padding must be non-negative, got {tuple(padding)}")
        return tuple(padding)
    ph, pw = pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def activation_name(name: str | None, arg: str, allowed: Sequence[str]) -> str:
    """An activation argument (None or a name) as the ops' name ('none' for None)."""
    name = "none" if name is None else name
    if name not in allowed:
        raise ValueError(f"{arg} must be None or one of {', '.join(repr(a) for a in allowed if a != 'none')}, "
                         f"got {name!r}")
    return name


def input_tensor(input, what: str = "input") -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{what} must be a 4-D tensor [N, C, H, W], got shape {tuple(input.shape)}")
    if min(input.shape[1:]) < 1:  # (C = 0 would divide by zero below; the backends disagree on H, W = 0)
        raise ValueError(f"{what} must have at least one channel and one pixel, got shape {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what} has dtype {input.dtype}; supported are float32, float64, float16 and bfloat16")


def autocasting(input: torch.Tensor) -> bool:
    if input.device.type == "meta":  # no autocast there: torch.is_autocast_enabled('meta') raises
        return False
    return torch.is_autocast_enabled(input.device.type)


def same_device_dtype(input: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    """Every given tensor on input's device with input's dtype (any dtype under autocast)."""
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != input.device:
            raise ValueError(f"{name} is on {t.device} but input is on {input.device}")
        if t.dtype != input.dtype and not autocasting(input):
            raise TypeError(f"{name} has dtype {t.dtype} but input has dtype {input.dtype}")


def depthwise_weight_shape(input: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    c = input.shape[1]
    if weight.dim() != 4 or weight.shape[1] != 1 or 0 in weight.shape or weight.shape[0] % c:
        raise ValueError(f"{name} must have shape [C * M, 1, kh, kw] for input channels C = {c} and a depth "
                         f"multiplier M >= 1, got {tuple(weight.shape)}")


def pointwise_weight_shape(channels: int, weight: torch.Tensor, name: str) -> None:
    if weight.dim() != 4 or weight.shape[1] != channels or weight.shape[2:] != (1, 1) or weight.shape[0] == 0:
        raise ValueError(f"{name} must have shape [O, {channels}, 1, 1], got {tuple(weight.shape)}")


def bias_shape(bias: torch.Tensor | None, channels: int, name: str = "bias") -> None:
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != channels):
        raise ValueError(f"{name} must have shape [{channels}], got {tuple(bias.shape)}")


def kernel_fits(input: torch.Tensor, kernel: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> None:
    for dim, (size, k, before, after, d) in enumerate(zip(input.shape[2:], kernel, padding[0::2], padding[1::2],
                                                          dilation)):
        span = d * (k - 1) + 1
        if span > size + before + after:
            raise ValueError(f"the kernel ({tuple(kernel)}, dilation {tuple(dilation)}) spans {span} pixels along "
                             f"{'HW'[dim]}, more than the padded input's {size + before + after}")


def depthwise_args(input, weight, stride, padding, dilation, name: str = "weight"):
    """The public depthwise arguments as the ops take them: (stride, padding, dilation) normalised,
    the weight's shape and the kernel's fit checked."""
    depthwise_weight_shape(input, weight, name)
    stride, dilation = pair(stride, "stride", 1), pair(dilation, "dilation", 1)
    kernel = tuple(weight.shape[2:])
    padding = normalize_padding(padding, input.shape[2:], kernel, stride, dilation)
    kernel_fits(input, kernel, padding, dilation)
    return stride, padding, dilation


# --------------------------------------------------------------------------------------------------
# The ops' own checks (normalised arguments; the compiled ops' messages)

_DTYPE_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}


def _dtype_name(dtype: torch.dtype) -> str:
    """The dtype as c10 prints it ('Float'), so the messages match the C++ ones."""
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _shape(t: torch.Tensor) -> str:
    return _list(t.shape)


def _list(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


@dataclass
class DepthwiseGeometry:
    """Sizes of one depthwise convolution (csrc/common/conv_args.h's DepthwiseGeometry, the ones
    the Python side needs)."""
    N: int
    C: int
    M: int
    OC: int  # C * M
    Ho: int
    Wo: int


def op_activation(op: str, arg: str, name: str, input_side: bool) -> str:
    allowed = INPUT_ACTIVATIONS if input_side else MID_ACTIVATIONS
    if name not in allowed:
        expected = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
        raise ValueError(f"{op}: unknown {arg} '{name}'; expected {expected}")
    return name


def _op_float_dtype(op: str, arg: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {arg} has dtype {_dtype_name(t.dtype)}; supported are float32, float64, float16 "
                        "and bfloat16")


def _op_same_device_dtype(op: str, arg: str, t: torch.Tensor, input: torch.Tensor) -> None:
    if t.device != input.device:
        raise RuntimeError(f"{op}: {arg} is on {t.device} but input is on {input.device}; "
                           "all tensors must be on one device")
    if t.dtype != input.dtype:
        raise TypeError(f"{op}: {arg} has dtype {_dtype_name(t.dtype)} but input has dtype "
                        f"{_dtype_name(input.dtype)}; all tensors must have one dtype")


def _op_input(op: str, input: torch.Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be a 4-D tensor [N, C, H, W], got {input.dim()}-D with shape "
                         f"{_shape(input)}")
    if input.shape[1] <= 0:
        raise ValueError(f"{op}: input must have at least one channel, got shape {_shape(input)}")
    _op_float_dtype(op, "input", input)


def _op_bias(op: str, bias: torch.Tensor | None, input: torch.Tensor, channels: int, name: str = "bias") -> None:
    if bias is not None:
        _op_same_device_dtype(op, name, bias, input)
        if not (bias.dim() == 1 and bias.shape[0] == channels):
            raise ValueError(f"{op}: {name} must have shape [{channels}], got {_shape(bias)}")


def op_depthwise(op: str, input, weight, bias, stride, padding, dilation, input_activation,
                 weight_name: str = "weight") -> DepthwiseGeometry:
    """`weight_name`: the depthwise weight's name in the op's schema."""
    _op_input(op, input)
    _op_same_device_dtype(op, weight_name, weight, input)
    c = input.shape[1]
    if not (weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] > 0 and weight.shape[0] % c == 0
            and weight.shape[2] > 0 and weight.shape[3] > 0):
        raise ValueError(f"{op}: {weight_name} must have shape [C * M, 1, kh, kw] for input channels C = {c} and a "
                         f"depth multiplier M >= 1, got {_shape(weight)}")
    oc, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    _op_bias(op, bias, input, oc)
    if not (len(stride) == 2 and min(stride) > 0):
        raise ValueError(f"{op}: stride must be two positive ints, got {_list(stride)}")
    if not (len(padding) == 4 and min(padding) >= 0):
        raise ValueError(f"{op}: padding must be four non-negative ints (top, bottom, left, right), got "
                         f"{_list(padding)}")
    if not (len(dilation) == 2 and min(dilation) > 0):
        raise ValueError(f"{op}: dilation must be two positive ints, got {_list(dilation)}")
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    padded_h = input.shape[2] + padding[0] + padding[1]
    padded_w = input.shape[3] + padding[2] + padding[3]
    if span_h > padded_h or span_w > padded_w:
        raise ValueError(f"{op}: the kernel ({kh}x{kw}, dilation {_list(dilation)}, spanning {span_h}x{span_w}) is "
                         f"larger than the padded input ({padded_h}x{padded_w})")
    op_activation(op, "input_activation", input_activation, input_side=True)
    _, _, ho, wo = depthwise_output_shape(input, weight, stride, padding, dilation)
    return DepthwiseGeometry(input.shape[0], c, oc // c, oc, ho, wo)


def op_pointwise(op: str, input, weight, bias) -> None:
    _op_input(op, input)
    _op_same_device_dtype(op, "weight", weight, input)
    shape_ok = (weight.dim() == 4 and weight.shape[2] == 1 and weight.shape[3] == 1) or weight.dim() == 2
    if not (shape_ok and weight.shape[1] == input.shape[1] and weight.shape[0] > 0):
        raise ValueError(f"{op}: weight must have shape [O, C, 1, 1] for input channels C = {input.shape[1]}, "
                         f"got {_shape(weight)}")
    _op_bias(op, bias, input, weight.shape[0])


def op_separable_pointwise(op: str, g: DepthwiseGeometry, input, pw_weight, bias) -> None:
    """The separable op's pointwise_weight [O, C * M, 1, 1] and bias [O]."""
    _op_same_device_dtype(op, "pointwise_weight", pw_weight, input)
    if not (pw_weight.dim() == 4 and pw_weight.shape[1] == g.OC and pw_weight.shape[2] == 1
            and pw_weight.shape[3] == 1 and pw_weight.shape[0] > 0):
        raise ValueError(f"{op}: pointwise_weight must have shape [O, {g.OC}, 1, 1], got {_shape(pw_weight)}")
    _op_bias(op, bias, input, pw_weight.shape[0])


def op_grad_output(op: str, grad, input, channels: int, ho: int, wo: int) -> None:
    _op_same_device_dtype(op, "grad_output", grad, input)
    expected = (input.shape[0], channels, ho, wo)
    if grad.dim() != 4 or tuple(grad.shape) != expected:
        raise ValueError(f"{op}: grad_output must have shape {_list(expected)}, got {_shape(grad)}")


# Every op's checks, by op name and the op's own argument order: the Triton ops and the fake kernels
# call these. Each returns the depthwise geometry where the op has one.

def depthwise_conv2d(input, weight, bias, stride, padding, dilation, input_activation, op="xsep.depthwise_conv2d"):
    return op_depthwise(op, input, weight, bias, stride, padding, dilation, input_activation)


def depthwise_conv2d_backward(op, grad_output, input, weight, stride, padding, dilation, input_activation):
    """depthwise_conv2d_grad_input, _grad_weight and _backward."""
    g = op_depthwise(op, input, weight, None, stride, padding, dilation, input_activation)
    op_grad_output(op, grad_output, input, g.OC, g.Ho, g.Wo)
    return g


def pointwise_conv2d(input, weight, bias, op="xsep.pointwise_conv2d") -> None:
    op_pointwise(op, input, weight, bias)


def pointwise_conv2d_backward(op, grad_output, input, weight) -> None:
    """pointwise_conv2d_grad_input and _grad_weight."""
    op_pointwise(op, input, weight, None)
    op_grad_output(op, grad_output, input, weight.shape[0], input.shape[2], input.shape[3])


def separable_conv2d(input, dw_weight, pw_weight, bias, stride, padding, dilation, input_activation, mid_activation,
                     depthwise_bias=None, op="xsep.separable_conv2d") -> DepthwiseGeometry:
    g = op_depthwise(op, input, dw_weight, None, stride, padding, dilation, input_activation, "depthwise_weight")
    op_separable_pointwise(op, g, input, pw_weight, bias)
    _op_bias(op, depthwise_bias, input, g.OC, "depthwise_bias")
    op_activation(op, "mid_activation", mid_activation, input_side=False)
    return g


def separable_conv2d_backward(grad_output, input, dw_weight, pw_weight, stride, padding, dilation, input_activation,
                              mid_activation, depthwise_bias=None,
                              op="xsep.separable_conv2d_backward") -> DepthwiseGeometry:
    g = separable_conv2d(input, dw_weight, pw_weight, None, stride, padding, dilation, input_activation,
                         mid_activation, depthwise_bias, op)
    op_grad_output(op, grad_output, input, pw_weight.shape[0], g.Ho, g.Wo)
    return g
