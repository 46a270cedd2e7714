"""Functional interface: depthwise, pointwise and fused depthwise-separable convolution.

Arguments follow torch.nn.functional.conv2d, with two extensions:
- `padding`: an int, a pair (h, w), a 4-tuple (top, bottom, left, right), 'valid', or 'same'
  with TensorFlow/Keras semantics (computed from the input size; an odd total puts the extra pixel at
  the bottom/right; works for any stride, unlike PyTorch's own 'same');
- `input_activation` ('relu' or None) applied to the input as it is loaded, leaving the input
  tensor itself untouched (Xception's "ReLU -> SeparableConv" units), and, for the fused op,
  `mid_activation` (None, 'relu', 'relu6', 'elu') between the depthwise and pointwise halves.

`backend` picks the implementation: see xsep.backends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from xsep import backends
from xsep.ops import implementation
from xsep.ops.reference import INPUT_ACTIVATIONS, MID_ACTIVATIONS

IntOrPair = int | Sequence[int]
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
Padding = int | Sequence[int] | str


def _pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
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
    ph, pw = _pair(padding, "padding", 0)
    return (ph, ph, pw, pw)


def _activation(name: str | None, arg: str, allowed: Sequence[str]) -> str:
    name = "none" if name is None else name
    if name not in allowed:
        raise ValueError(f"{arg} must be None or one of {', '.join(repr(a) for a in allowed if a != 'none')}, "
                         f"got {name!r}")
    return name


def _check_input(input, what: str = "input") -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{what} must be a 4-D tensor [N, C, H, W], got shape {tuple(input.shape)}")
    if min(input.shape[1:]) < 1:  # (C = 0 would divide by zero below; the backends disagree on H, W = 0)
        raise ValueError(f"{what} must have at least one channel and one pixel, got shape {tuple(input.shape)}")
    if input.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{what} has dtype {input.dtype}; supported are float32, float64, float16 and bfloat16")


def _check_same(input: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.device != input.device:
            raise ValueError(f"{name} is on {t.device} but input is on {input.device}")
        if t.dtype != input.dtype and not _autocasting(input):
            raise TypeError(f"{name} has dtype {t.dtype} but input has dtype {input.dtype}")


def _check_depthwise_weight(input: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    c = input.shape[1]
    if weight.dim() != 4 or weight.shape[1] != 1 or 0 in weight.shape or weight.shape[0] % c:
        raise ValueError(f"{name} must have shape [C * M, 1, kh, kw] for input channels C = {c} and a depth "
                         f"multiplier M >= 1, got {tuple(weight.shape)}")


def _check_pointwise_weight(channels: int, weight: torch.Tensor, name: str) -> None:
    if weight.dim() != 4 or weight.shape[1] != channels or weight.shape[2:] != (1, 1) or weight.shape[0] == 0:
        raise ValueError(f"{name} must have shape [O, {channels}, 1, 1], got {tuple(weight.shape)}")


def _check_bias(bias: torch.Tensor | None, channels: int) -> None:
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != channels):
        raise ValueError(f"bias must have shape [{channels}], got {tuple(bias.shape)}")


def _check_fits(input: torch.Tensor, kernel: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> None:
    for dim, (size, k, before, after, d) in enumerate(zip(input.shape[2:], kernel, padding[0::2], padding[1::2], dilation)):
        span = d * (k - 1) + 1
        if span > size + before + after:
            raise ValueError(f"the kernel ({tuple(kernel)}, dilation {tuple(dilation)}) spans {span} pixels along "
                             f"{'HW'[dim]}, more than the padded input's {size + before + after}")


def _autocasting(input: torch.Tensor) -> bool:
    if input.device.type == "meta":  # no autocast there: torch.is_autocast_enabled('meta') raises
        return False
    return torch.is_autocast_enabled(input.device.type)


def _autocast(input: torch.Tensor, *tensors: torch.Tensor | None):
    """Under torch.autocast, run in the autocast dtype, as nn.Conv2d does."""
    dtype = torch.get_autocast_dtype(input.device.type)
    return [None if t is None else t.to(dtype) for t in (input, *tensors)]


@torch.compiler.assume_constant_result
def _select_backend(backend: str | None, device: torch.device, op: str) -> str:
    """backends.select, which torch.compile runs once while tracing and bakes into the graph (it
    takes a lock, reads the environment and asks the dispatcher: nothing for Dynamo to trace)."""
    return backends.select(backend, device, op)


def _run(op: str, backend: str | None, input: torch.Tensor, *args):
    impl = implementation(_select_backend(backend, input.device, op))
    if _autocasting(input):
        n_tensors = {"depthwise_conv2d": 3, "pointwise_conv2d": 3, "separable_conv2d": 4}[op]
        tensors = _autocast(input, *args[: n_tensors - 1])
        with torch.autocast(input.device.type, enabled=False):
            return getattr(impl, op)(*tensors, *args[n_tensors - 1:])
    return getattr(impl, op)(input, *args)


def depthwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
                     input_activation: str | None = None, backend: str | None = None) -> torch.Tensor:
    """Depthwise convolution: `F.conv2d(act(input), weight, bias, stride, padding, dilation,
    groups=C)` with weight [C * M, 1, kh, kw] (depth multiplier M)."""
    _check_input(input)
    _check_same(input, weight=weight, bias=bias)
    _check_depthwise_weight(input, weight, "weight")
    _check_bias(bias, weight.shape[0])
    stride, dilation = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    kernel = tuple(weight.shape[2:])
    padding = normalize_padding(padding, input.shape[2:], kernel, stride, dilation)
    _check_fits(input, kernel, padding, dilation)
    act = _activation(input_activation, "input_activation", INPUT_ACTIVATIONS)
    return _run("depthwise_conv2d", backend, input, weight, bias, stride, padding, dilation, act)


def pointwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     backend: str | None = None) -> torch.Tensor:
    """1x1 convolution: `F.conv2d(input, weight, bias)` with weight [O, C, 1, 1]."""
    _check_input(input)
    _check_same(input, weight=weight, bias=bias)
    _check_pointwise_weight(input.shape[1], weight, "weight")
    _check_bias(bias, weight.shape[0])
    return _run("pointwise_conv2d", backend, input, weight, bias)


def separable_conv2d(input: torch.Tensor, depthwise_weight: torch.Tensor, pointwise_weight: torch.Tensor,
                     bias: torch.Tensor | None = None, stride: IntOrPair = 1, padding: Padding = 0,
                     dilation: IntOrPair = 1, input_activation: str | None = None,
                     mid_activation: str | None = None, backend: str | None = None) -> torch.Tensor:
    """Fused depthwise-separable convolution: depthwise (weight [C * M, 1, kh, kw]; stride, padding
    and dilation apply here), then `mid_activation`, then pointwise (weight [O, C * M, 1, 1]) plus
    `bias`. The intermediate tensor is never written to memory by the native backend."""
    _check_input(input)
    _check_same(input, depthwise_weight=depthwise_weight, pointwise_weight=pointwise_weight, bias=bias)
    _check_depthwise_weight(input, depthwise_weight, "depthwise_weight")
    _check_pointwise_weight(depthwise_weight.shape[0], pointwise_weight, "pointwise_weight")
    _check_bias(bias, pointwise_weight.shape[0])
    stride, dilation = _pair(stride, "stride", 1), _pair(dilation, "dilation", 1)
    kernel = tuple(depthwise_weight.shape[2:])
    padding = normalize_padding(padding, input.shape[2:], kernel, stride, dilation)
    _check_fits(input, kernel, padding, dilation)
    in_act = _activation(input_activation, "input_activation", INPUT_ACTIVATIONS)
    mid_act = _activation(mid_activation, "mid_activation", MID_ACTIVATIONS)
    return _run("separable_conv2d", backend, input, depthwise_weight, pointwise_weight, bias, stride,
                padding, dilation, in_act, mid_act)
