"""The argument checks of the compiled ops (csrc/common/conv_args.cpp, csrc/cpu/separable_conv2d.cpp),
in Python for the Triton ops: the same conditions, error types and messages, so that both backends
refuse the same calls the same way. Returns the geometry the launchers need."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_FLOAT = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_DTYPE_NAMES = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}


def _name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _list(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def activation(op: str, arg: str, name: str, input_side: bool) -> str:
    allowed = ("none", "relu") if input_side else ("none", "relu", "relu6", "elu")
    if name not in allowed:
        expected = "'none' or 'relu'" if input_side else "'none', 'relu', 'relu6' or 'elu'"
        raise ValueError(f"{op}: unknown {arg} '{name}'; expected {expected}")
    return name


def _float_dtype(op: str, arg: str, t: torch.Tensor) -> None:
    if t.dtype not in _FLOAT:
        raise TypeError(f"{op}: {arg} has dtype {_name(t.dtype)}; supported are float32, float64, float16 and bfloat16")


def _same_device_dtype(op: str, arg: str, t: torch.Tensor, input: torch.Tensor) -> None:
    if t.device != input.device:
        raise RuntimeError(f"{op}: {arg} is on {t.device} but input is on {input.device}; "
                           "all tensors must be on one device")
    if t.dtype != input.dtype:
        raise TypeError(f"{op}: {arg} has dtype {_name(t.dtype)} but input has dtype {_name(input.dtype)}; "
                        "all tensors must have one dtype")


def _input(op: str, input: torch.Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be a 4-D tensor [N, C, H, W], got {input.dim()}-D with shape "
                         f"{_shape(input)}")
    if input.shape[1] <= 0:
        raise ValueError(f"{op}: input must have at least one channel, got shape {_shape(input)}")
    _float_dtype(op, "input", input)


@dataclass
class Depthwise:
    C: int
    OC: int
    Ho: int
    Wo: int


def depthwise(op: str, input, weight, bias, stride, padding, dilation, input_activation) -> Depthwise:
    _input(op, input)
    _same_device_dtype(op, "weight", weight, input)
    c = input.shape[1]
    if not (weight.dim() == 4 and weight.shape[1] == 1 and weight.shape[0] > 0 and weight.shape[0] % c == 0
            and weight.shape[2] > 0 and weight.shape[3] > 0):
        raise ValueError(f"{op}: weight must have shape [C * M, 1, kh, kw] for input channels C = {c} and a depth "
                         f"multiplier M >= 1, got {_shape(weight)}")
    oc, kh, kw = weight.shape[0], weight.shape[2], weight.shape[3]
    if bias is not None:
        _same_device_dtype(op, "bias", bias, input)
        if not (bias.dim() == 1 and bias.shape[0] == oc):
            raise ValueError(f"{op}: bias must have shape [{oc}], got {_shape(bias)}")
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
    activation(op, "input_activation", input_activation, input_side=True)
    return Depthwise(c, oc, (padded_h - span_h) // stride[0] + 1, (padded_w - span_w) // stride[1] + 1)


def pointwise(op: str, input, weight, bias) -> None:
    _input(op, input)
    _same_device_dtype(op, "weight", weight, input)
    shape_ok = (weight.dim() == 4 and weight.shape[2] == 1 and weight.shape[3] == 1) or weight.dim() == 2
    if not (shape_ok and weight.shape[1] == input.shape[1] and weight.shape[0] > 0):
        raise ValueError(f"{op}: weight must have shape [O, C, 1, 1] for input channels C = {input.shape[1]}, "
                         f"got {_shape(weight)}")
    if bias is not None:
        _same_device_dtype(op, "bias", bias, input)
        if not (bias.dim() == 1 and bias.shape[0] == weight.shape[0]):
            raise ValueError(f"{op}: bias must have shape [{weight.shape[0]}], got {_shape(bias)}")


def pointwise_weight(op: str, g: Depthwise, input, pw_weight, bias) -> None:
    if pw_weight.device != input.device:
        raise RuntimeError(f"{op}: pointwise_weight is on {pw_weight.device} but input is on {input.device}")
    if pw_weight.dtype != input.dtype:
        raise TypeError(f"{op}: pointwise_weight has dtype {_name(pw_weight.dtype)} but input has dtype "
                        f"{_name(input.dtype)}")
    if not (pw_weight.dim() == 4 and pw_weight.shape[1] == g.OC and pw_weight.shape[2] == 1
            and pw_weight.shape[3] == 1 and pw_weight.shape[0] > 0):
        raise ValueError(f"{op}: pointwise_weight must have shape [O, {g.OC}, 1, 1], got {_shape(pw_weight)}")
    if bias is not None:
        if bias.device != input.device:
            raise RuntimeError(f"{op}: bias is on {bias.device} but input is on {input.device}")
        if bias.dtype != input.dtype:
            raise TypeError(f"{op}: bias has dtype {_name(bias.dtype)} but input has dtype {_name(input.dtype)}")
        if not (bias.dim() == 1 and bias.shape[0] == pw_weight.shape[0]):
            raise ValueError(f"{op}: bias must have shape [{pw_weight.shape[0]}], got {_shape(bias)}")


def grad_output(op: str, grad, input, channels: int, ho: int, wo: int) -> None:
    _same_device_dtype(op, "grad_output", grad, input)
    expected = (input.shape[0], channels, ho, wo)
    if grad.dim() != 4 or tuple(grad.shape) != expected:
        raise ValueError(f"{op}: grad_output must have shape {_list(expected)}, got {_shape(grad)}")
