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

import os

import torch

from xsep import _extension, backends
from xsep.ops import autograd, checks
from xsep.ops.autograd import join_args, split_args
from xsep.ops.checks import IntOrPair, Padding, normalize_padding, same_padding  # noqa: F401  (public)
from xsep.ops.schemas import INPUT_ACTIVATIONS, MID_ACTIVATIONS


def _autocast(device_type: str, tensors):
    """Under torch.autocast, run in the autocast dtype, as nn.Conv2d does."""
    dtype = torch.get_autocast_dtype(device_type)
    return [None if t is None else t.to(dtype) for t in tensors]


# The automatic choice per (device, op, layout), made once: every input it depends on (the library,
# the committed results, this CPU, the allocator setting) is fixed for the process, and making it
# cost 40-90 us a call inside a model, whose large layers leave the interpreter's data out of the
# caches (convnext_atto's 7x7 layers, Zen 4): as much as a small layer's kernel. Tests that change
# those inputs clear it (tests/conftest.py).
_AUTOMATIC: dict[tuple[torch.device, str, str], str] = {}


@torch.compiler.assume_constant_result
def _select_backend(backend: str | None, device: torch.device, op: str, layout: str) -> str:
    """backends.select, which torch.compile runs once while tracing and bakes into the graph (it
    takes a lock, reads the environment and asks the dispatcher: nothing for Dynamo to trace)."""
    if backend is not None or os.environ.get("XSEP_BACKEND"):
        return backends.select(backend, device, op, layout)
    key = (device, op, layout)
    choice = _AUTOMATIC.get(key)
    if choice is None:
        choice = _AUTOMATIC[key] = backends.select(None, device, op, layout)
    return choice


def _layout(input: torch.Tensor) -> str:
    """The bench's name for the input's memory format (what the automatic choice's data is per)."""
    while torch._C._functorch.is_batchedtensor(input):  # under vmap: the batched tensor's own layout
        input = torch._C._functorch.get_unwrapped(input)
    channels_last = input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous()
    return "channels_last" if channels_last else "nchw"


def _run(op: str, backend: str | None, input: torch.Tensor, *args):
    impl = backends.implementation(_select_backend(backend, input.device, op, _layout(input)))
    if checks.autocasting(input):
        tensors, rest = split_args(op, (input, *args))
        with torch.autocast(input.device.type, enabled=False):
            return getattr(impl, op)(*join_args(op, _autocast(input.device.type, tensors), rest))
    return getattr(impl, op)(input, *args)


def module_call(op: str, backend: str | None, input: torch.Tensor, *args) -> torch.Tensor | None:
    """The xsep modules' shortcut for `op` with the arguments the module holds, normalised as the op
    takes them (tuples of ints): on the native backend, for a plain tensor, without autocast,
    torch.compile, tracing, forward-mode AD or a torch.func transform, an inference call (nothing for
    autograd to record) goes from xsep._C's function for the op to its kernel, a training call
    through autograd.plain_function (the public path's forward and backward, same results and
    gradients), that function having made the checks (csrc/module_calls.cpp; the same in Python
    where it declines). None elsewhere, and where the op refuses the arguments: the public function
    then checks them and says why in its own terms. It skips the public path's Python (argument
    checks, backend plumbing: about 70 function calls), which inside a model costs more than a small
    layer's kernel, the model's other layers having evicted the interpreter's data from the caches: a
    7x7 layer's call after the rest of a ConvNeXt block (convnext_atto, Zen 4, 2 threads, 1-pixel
    input: the call alone, min to median) took 156-216 us through the public path, 88-141 us with
    this function's checks in Python and torch.ops below autograd, 80-97 us for nn.Conv2d; 36-45,
    26-29 and 44-48 us when repeated at once. In convnext_atto's channels-last inference (batch 8,
    2-core Intel Xeon, 2026-12-06) those checks and torch.ops cost 90-120 us around each depthwise
    kernel, xsep._C's function 20-35. With gradients to record (8x384x14x14 channels-last 3x3, median
    of 300): 208-214 us through the public path, 135-150 with the checks in Python, 145-151 for
    nn.Conv2d. Inside mobilenet_v2's channels-last training step (batch 8) its 17 depthwise forwards
    took 16 ms through the public path, 14.1 with the checks in Python, 11.6 for nn.Conv2d's, whose
    kernels take 11.4 ms of that, xsep's 11.4-11.7; with the checks in C++ the module's call at
    112x112x32 took 1415 us instead of 1594, at 7x7x960 210 instead of 266 (nn.Conv2d: 1310, 248)."""
    if torch.compiler.is_compiling():
        return None
    native_call = _extension.MODULE_CALLS.get(op)
    out = None if native_call is None else native_call(_native_layouts(backend, input, op), input, *args)
    if out is None:  # the library's function declined (or is missing): its checks (module_calls.cpp: verdict) here
        if (torch.autograd.forward_ad._current_level >= 0 or type(input) is not torch.Tensor
                or torch.jit.is_tracing() or torch._C._functorch.peek_interpreter_stack() is not None
                or checks.autocasting(input)
                or _select_backend(backend, input.device, op, _layout(input)) != "native"):
            return None
    elif out is not False:
        return out
    args = (input, *args)
    try:
        if out is False or autograd.records_gradients(op, args):  # (forward mode, torch.func excluded above)
            return autograd.plain_function("xsep", op).apply(*autograd.full_args(op, args))
        return autograd._below_autograd("xsep", op, args)
    except (RuntimeError, ValueError, TypeError, IndexError):
        return None


# module_call's layouts per (device, op) for backend=None, as the bit mask xsep._C's functions take.
_NATIVE_LAYOUTS: dict[tuple[torch.device, str], int] = {}


def forget_automatic_choices() -> None:
    """Forgets the automatic choices made so far (_AUTOMATIC, _NATIVE_LAYOUTS), for tests that
    change what they depend on."""
    _AUTOMATIC.clear()
    _NATIVE_LAYOUTS.clear()


def _native_layouts(backend: str | None, input: torch.Tensor, op: str) -> int:
    """The layouts `op` runs on the native backend for inputs like `input`, as a mask of
    _extension.LAYOUT_BITS, 0 where choosing raises (the public path then says why). For
    backend=None, per device and remembered once XSEP_BACKEND is unset (xsep._C's functions decline
    while it is set: the Python path reads it); a named backend, checked every call (backends), for
    the input's own layout."""
    if backend is not None:
        layout = _layout(input)
        try:
            native = _select_backend(backend, input.device, op, layout) == "native"
        except (RuntimeError, ValueError):
            native = False
        return _extension.LAYOUT_BITS[layout] if native else 0
    device = input.device
    layouts = _NATIVE_LAYOUTS.get((device, op))
    if layouts is not None:
        return layouts
    layouts = 0
    for layout, bit in _extension.LAYOUT_BITS.items():
        try:
            layouts |= bit if _select_backend(None, device, op, layout) == "native" else 0
        except (RuntimeError, ValueError):
            pass
    if not os.environ.get("XSEP_BACKEND"):
        _NATIVE_LAYOUTS[(device, op)] = layouts
    return layouts


def depthwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     stride: IntOrPair = 1, padding: Padding = 0, dilation: IntOrPair = 1,
                     input_activation: str | None = None, backend: str | None = None) -> torch.Tensor:
    """Depthwise convolution: `F.conv2d(act(input), weight, bias, stride, padding, dilation,
    groups=C)` with weight [C * M, 1, kh, kw] (depth multiplier M)."""
    checks.input_tensor(input)
    checks.same_device_dtype(input, weight=weight, bias=bias)
    stride, padding, dilation = checks.depthwise_args(input, weight, stride, padding, dilation)
    checks.bias_shape(bias, weight.shape[0])
    act = checks.activation_name(input_activation, "input_activation", INPUT_ACTIVATIONS)
    return _run("depthwise_conv2d", backend, input, weight, bias, stride, padding, dilation, act)


def pointwise_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     backend: str | None = None) -> torch.Tensor:
    """1x1 convolution: `F.conv2d(input, weight, bias)` with weight [O, C, 1, 1]."""
    checks.input_tensor(input)
    checks.same_device_dtype(input, weight=weight, bias=bias)
    checks.pointwise_weight_shape(input.shape[1], weight, "weight")
    checks.bias_shape(bias, weight.shape[0])
    return _run("pointwise_conv2d", backend, input, weight, bias)


def separable_conv2d(input: torch.Tensor, depthwise_weight: torch.Tensor, pointwise_weight: torch.Tensor,
                     bias: torch.Tensor | None = None, stride: IntOrPair = 1, padding: Padding = 0,
                     dilation: IntOrPair = 1, input_activation: str | None = None,
                     mid_activation: str | None = None, backend: str | None = None,
                     depthwise_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Fused depthwise-separable convolution: depthwise (weight [C * M, 1, kh, kw], plus
    `depthwise_bias` [C * M]; stride, padding and dilation apply here), then `mid_activation`, then
    pointwise (weight [O, C * M, 1, 1]) plus `bias`. The intermediate tensor is never written to
    memory by the native backend."""
    checks.input_tensor(input)
    checks.same_device_dtype(input, depthwise_weight=depthwise_weight, pointwise_weight=pointwise_weight, bias=bias,
                             depthwise_bias=depthwise_bias)
    checks.depthwise_weight_shape(input, depthwise_weight, "depthwise_weight")
    checks.pointwise_weight_shape(depthwise_weight.shape[0], pointwise_weight, "pointwise_weight")
    checks.bias_shape(bias, pointwise_weight.shape[0])
    checks.bias_shape(depthwise_bias, depthwise_weight.shape[0], "depthwise_bias")
    stride, padding, dilation = checks.depthwise_args(input, depthwise_weight, stride, padding, dilation,
                                                      "depthwise_weight")
    in_act = checks.activation_name(input_activation, "input_activation", INPUT_ACTIVATIONS)
    mid_act = checks.activation_name(mid_activation, "mid_activation", MID_ACTIVATIONS)
    return _run("separable_conv2d", backend, input, depthwise_weight, pointwise_weight, bias, stride,
                padding, dilation, in_act, mid_act, depthwise_bias)
