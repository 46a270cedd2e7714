"""xsep.functional: every op on every CPU backend against the float64 reference (forward and
backward), 'same' padding arithmetic, argument forms, memory formats, dtypes and autocast."""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as torch_F
from helpers import DTYPE_NAMES, LAYOUTS, at_one_and_two_threads, memory_format_of, pairwise, poisoned

import xsep.functional as XF
from xsep.ops import reference
from xsep.testing import (
    FIXED_TOLERANCE,
    assert_matches_reference,
    check_against_reference,
    reference_results,
    rel_error,
    results,
)

# --------------------------------------------------------------------------------------------------
# Case descriptions


class Shape(NamedTuple):
    n: int
    c: int
    h: int
    w: int
    o: int  # pointwise output channels

    def __str__(self):
        return f"n{self.n}c{self.c}h{self.h}w{self.w}o{self.o}"


SHAPES = (
    Shape(2, 3, 9, 11, 7),   # odd spatial sizes, H != W, few channels
    Shape(1, 13, 8, 8, 5),   # even input (TF 'same' with stride 2 is asymmetric), 13 channels
    Shape(0, 5, 7, 6, 3),    # empty batch
    Shape(2, 3, 1, 1, 4),    # 1x1 spatial: every tap but the centre reads padding
    Shape(1, 19, 6, 5, 21),  # 19 channels (38 with M = 2): a full vector plus a ragged tail
)
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _span(kernel, dilation):
    (kh, kw), (dh, dw) = _as_pair(kernel), _as_pair(dilation)
    return dh * (kh - 1) + 1, dw * (kw - 1) + 1


def padding_argument(kind: str, kernel, dilation):
    """The `padding` argument for a padding kind, and the (top, bottom, left, right) it must mean
    (None for 'same': computed by same_padding, tested on its own below). Every kind fits any input
    size: each side pads at least half the kernel's span."""
    sh, sw = _span(kernel, dilation)
    if kind == "sym":  # an int when both sides agree, else an (h, w) pair: both forms are exercised
        ph, pw = sh // 2, sw // 2
        return (ph if ph == pw else (ph, pw)), (ph, ph, pw, pw)
    if kind == "asym":  # every side different from its opposite, and H's from W's
        pad = (sh // 2 + 1, sh // 2, sw // 2, sw // 2 + 2)
        return pad, pad
    if kind == "same":
        return "same", None
    if kind == "valid":
        return "valid", (0, 0, 0, 0)
    raise ValueError(kind)


def expected_padding(kind, kernel, stride, dilation, shape: Shape):
    arg, pad = padding_argument(kind, kernel, dilation)
    if pad is None:
        (kh, kw), (s_h, s_w), (dh, dw) = _as_pair(kernel), _as_pair(stride), _as_pair(dilation)
        pad = (*XF.same_padding(shape.h, kh, s_h, dh), *XF.same_padding(shape.w, kw, s_w, dw))
    return arg, pad


def case_id(case: dict) -> str:
    parts = []
    for key, value in case.items():
        if key == "kernel":
            kh, kw = _as_pair(value)
            parts.append(f"k{kh}x{kw}")
        elif key in ("stride", "dilation"):
            parts.append(f"{key[0]}{'x'.join(map(str, _as_pair(value)))}")
        elif key == "padding":
            parts.append(f"pad_{value}")
        elif key == "multiplier":
            parts.append(f"M{value}")
        elif key == "bias":
            parts.append("bias" if value else "nobias")
        elif key == "depthwise_bias":
            parts.append("dwbias" if value else "nodwbias")
        elif key in ("input_activation", "mid_activation"):
            parts.append(f"{key.split('_')[0]}_{value or 'none'}")
        elif key == "dtype":
            parts.append(DTYPE_NAMES[value])
        elif key == "note":
            parts.append(value)
        else:
            parts.append(str(value))
    return "-".join(parts)


# A covering design: every pair of values of any two parameters occurs in at least one case
# (~30 cases instead of the ~300,000 of the full product).
_GEOMETRY = dict(
    kernel=(1, 3, 5, 7, (3, 5)),
    stride=(1, 2, (2, 1)),
    dilation=(1, 2, (1, 2)),
    padding=("sym", "asym", "same"),
    multiplier=(1, 2),
    bias=(True, False),
    input_activation=(None, "relu"),
)
_DATA = dict(layout=LAYOUTS, dtype=DTYPES, shape=SHAPES)

# Hand-picked cases on top, for what matters as a triple or was seen to break elsewhere.
_EXTRA_GEOMETRY = [
    # TF 'same', stride 2, even input: total padding odd, the extra pixel at the bottom/right.
    dict(kernel=3, stride=2, dilation=1, padding="same", multiplier=1, bias=True, input_activation=None,
         layout="contiguous", dtype=torch.float32, shape=SHAPES[1], note="tf_same_s2_even"),
    # The same, channels_last and low precision (the layout the fused kernels prefer).
    dict(kernel=5, stride=2, dilation=1, padding="same", multiplier=2, bias=False, input_activation="relu",
         layout="channels_last", dtype=torch.bfloat16, shape=SHAPES[1], note="tf_same_s2_even"),
    # An even kernel: 'same' is asymmetric even at stride 1.
    dict(kernel=2, stride=1, dilation=1, padding="same", multiplier=1, bias=True, input_activation=None,
         layout="contiguous", dtype=torch.float64, shape=SHAPES[0], note="even_kernel"),
    # 'valid' (no padding) with a kernel that just fits the 9x11 input.
    dict(kernel=(9, 11), stride=1, dilation=1, padding="valid", multiplier=1, bias=True,
         input_activation=None, layout="contiguous", dtype=torch.float64, shape=SHAPES[0], note="valid_full"),
    dict(kernel=3, stride=(1, 2), dilation=(2, 1), padding="valid", multiplier=2, bias=False,
         input_activation="relu", layout="sliced", dtype=torch.float32, shape=SHAPES[0], note="valid"),
]

# NCHW inputs run kernels vectorised along W (csrc/cpu/depthwise_nchw_kernels_impl.h), but every
# width in SHAPES is below one AVX-512 float vector: these rows are wide enough for the blocks of
# four vectors and a ragged tail at every instruction set's width (70 = 4 x 16 + 6 float lanes at
# AVX-512, 8 x 8 + 6 at AVX2, ...; 37 = 2 x 16 + 5), in every dtype, at stride 1, 2 and 1 x 2,
# with dilation, asymmetric padding, M = 2, a bias and the input relu.
_NCHW_WIDE_SHAPES = (Shape(2, 3, 5, 70, 4), Shape(1, 2, 6, 37, 3))
_NCHW_WIDE = [
    dict(kernel=kernel, stride=stride, dilation=dilation, padding="asym", multiplier=m, bias=True,
         input_activation="relu", layout="contiguous", dtype=dtype, shape=_NCHW_WIDE_SHAPES[k % 2], note="nchw_wide")
    for k, (dtype, (kernel, stride, dilation, m)) in enumerate(itertools.product(
        DTYPES, [(3, 1, 1, 1), ((3, 5), 2, (1, 2), 2), (5, (1, 2), 2, 1)]))
]

DEPTHWISE_CASES = pairwise({**_GEOMETRY, **_DATA}) + _EXTRA_GEOMETRY + _NCHW_WIDE
SEPARABLE_CASES = pairwise({**_GEOMETRY, "mid_activation": (None, "relu", "relu6", "elu"),
                            "depthwise_bias": (False, True), **_DATA}) + [
    {**c, "mid_activation": m, "depthwise_bias": db}
    for c, m, db in zip(_EXTRA_GEOMETRY, ("relu6", "elu", None, "relu", "relu6"), (True, False, True, False, True))
] + [{**c, "mid_activation": ("relu6", "elu", None)[k % 3], "depthwise_bias": k % 2 == 0}
     for k, c in enumerate(_NCHW_WIDE)]
POINTWISE_CASES = pairwise(dict(bias=(True, False), **_DATA))


# --------------------------------------------------------------------------------------------------
# Running a case


def check_memory_formats(x, out, grad_x):
    """Output and input gradient take the input's memory format (NCHW in -> NCHW out,
    channels_last in -> channels_last out), where the input's format is unambiguous."""
    fmt = memory_format_of(x)
    if fmt is None:
        return
    assert out.is_contiguous(memory_format=fmt), f"input is {fmt} but the output has strides {out.stride()}"
    assert grad_x.is_contiguous(memory_format=fmt), f"input is {fmt} but its gradient has strides {grad_x.stride()}"


def _input(shape: Shape, case) -> torch.Tensor:
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, dtype=torch.float64)
    return poisoned(x.to(case["dtype"]), case["layout"])


def _weight(*size, dtype) -> torch.Tensor:
    # nn.Conv2d-like scale (uniform in +-1/sqrt(fan_in)) keeps outputs O(1): relu6 clips some.
    fan_in = math.prod(size[1:])
    return ((torch.rand(*size, dtype=torch.float64) * 2 - 1) * 3 / math.sqrt(fan_in)).to(dtype)


# --------------------------------------------------------------------------------------------------
# The sweep


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[case_id(c) for c in DEPTHWISE_CASES])
def test_depthwise_matches_reference(backend, case, request):
    # The depthwise op over the covering design: forward, and gradients of input, weight and bias.
    shape, dtype = case["shape"], case["dtype"]
    kh, kw = _as_pair(case["kernel"])
    arg, pad = expected_padding(case["padding"], case["kernel"], case["stride"], case["dilation"], shape)
    x = _input(shape, case)
    weight = _weight(shape.c * case["multiplier"], 1, kh, kw, dtype=dtype)
    bias = _weight(shape.c * case["multiplier"], 1, dtype=dtype)[:, 0] if case["bias"] else None
    act = case["input_activation"]

    def run(x, weight, bias):
        return XF.depthwise_conv2d(x, weight, bias, case["stride"], arg, case["dilation"], act, backend=backend)

    def ref(x, weight, bias):
        return reference.depthwise_conv2d(x, weight, bias, _as_pair(case["stride"]), pad,
                                          _as_pair(case["dilation"]), act or "none")

    with _pytorch_padding_taps_bug(backend, case, request):
        got = check_against_reference(run, ref, [x, weight, bias], ["input", "weight", "bias"])
    check_memory_formats(x, got["output"], got["grad_input"])


@contextlib.contextmanager
def _pytorch_padding_taps_bug(backend, case, request):
    """PyTorch's own bfloat16/float16 depthwise convolution on CPU (torch 2.14.1, oneDNN) returns a
    weight gradient with uninitialised values for kernel taps that only ever see padding (a kernel
    wider than the input): measured with a 1x1 input and a 3x5 kernel, wrong in about half the runs,
    whatever the layout. For those cases the `torch` backend (PyTorch itself) is an expected, not
    strict, failure; and for every backend, a run in which PyTorch's own result (the low-precision
    yardstick of the tolerance) came out non-finite is an expected failure rather than an error.
    Otherwise xsep's kernels are held to the usual rule."""
    (kh, kw), (dh, dw) = _as_pair(case["kernel"]), _as_pair(case["dilation"])
    shape = case["shape"]
    affected = (case["dtype"] in (torch.bfloat16, torch.float16)
                and (dh * (kh - 1) + 1 > shape.h or dw * (kw - 1) + 1 > shape.w))
    reason = "PyTorch bug: low-precision CPU depthwise weight gradient leaves padding-only taps uninitialised"
    if affected and backend == "torch":
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))
    try:
        yield
    except ValueError as error:
        if affected and "needs PyTorch's own (finite) error" in str(error):
            pytest.xfail(f"{reason} ({error})")
        raise


@pytest.mark.parametrize("case", SEPARABLE_CASES, ids=[case_id(c) for c in SEPARABLE_CASES])
def test_separable_matches_reference(backend, case, request):
    # The fused op over the covering design (mid activations included): forward, and gradients of
    # input, both weights, bias and depthwise bias.
    shape, dtype = case["shape"], case["dtype"]
    kh, kw = _as_pair(case["kernel"])
    arg, pad = expected_padding(case["padding"], case["kernel"], case["stride"], case["dilation"], shape)
    mid = shape.c * case["multiplier"]
    x = _input(shape, case)
    dw = _weight(mid, 1, kh, kw, dtype=dtype)
    pw = _weight(shape.o, mid, 1, 1, dtype=dtype)
    bias = _weight(shape.o, 1, dtype=dtype)[:, 0] if case["bias"] else None
    dw_bias = _weight(mid, 1, dtype=dtype)[:, 0] if case["depthwise_bias"] else None
    in_act, mid_act = case["input_activation"], case["mid_activation"]

    def run(x, dw, pw, bias, dw_bias):
        return XF.separable_conv2d(x, dw, pw, bias, case["stride"], arg, case["dilation"], in_act, mid_act,
                                  backend=backend, depthwise_bias=dw_bias)

    def ref(x, dw, pw, bias, dw_bias):
        return reference.separable_conv2d(x, dw, pw, bias, _as_pair(case["stride"]), pad,
                                          _as_pair(case["dilation"]), in_act or "none", mid_act or "none", dw_bias)

    with _pytorch_padding_taps_bug(backend, case, request):
        got = check_against_reference(run, ref, [x, dw, pw, bias, dw_bias],
                                      ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"])
    check_memory_formats(x, got["output"], got["grad_input"])


@pytest.mark.parametrize("case", POINTWISE_CASES, ids=[case_id(c) for c in POINTWISE_CASES])
def test_pointwise_matches_reference(backend, case):
    # The 1x1 op over its (smaller) design: forward, and gradients of input, weight and bias.
    shape, dtype = case["shape"], case["dtype"]
    x = _input(shape, case)
    weight = _weight(shape.o, shape.c, 1, 1, dtype=dtype)
    bias = _weight(shape.o, 1, dtype=dtype)[:, 0] if case["bias"] else None

    def run(x, weight, bias):
        return XF.pointwise_conv2d(x, weight, bias, backend=backend)

    got = check_against_reference(run, reference.pointwise_conv2d, [x, weight, bias], ["input", "weight", "bias"])
    check_memory_formats(x, got["output"], got["grad_input"])


# --------------------------------------------------------------------------------------------------
# Layouts of the other tensors


OPS = ("depthwise", "pointwise", "separable")


def _op_case(op: str, dtype=torch.float64, shape=Shape(2, 6, 7, 9, 5), multiplier=2):
    """(run(backend) -> callable, reference callable, tensors, names) for a small fixed case with
    asymmetric padding, stride 2 and both activations."""
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, dtype=dtype)
    mid = shape.c * multiplier
    pad = (1, 2, 0, 1)
    if op == "depthwise":
        tensors = [x, _weight(mid, 1, 3, 3, dtype=dtype), _weight(mid, 1, dtype=dtype)[:, 0]]
        names = ["input", "weight", "bias"]

        def run(backend):
            return lambda x, w, b: XF.depthwise_conv2d(x, w, b, 2, pad, 1, "relu", backend=backend)

        def ref(x, w, b):
            return reference.depthwise_conv2d(x, w, b, (2, 2), pad, (1, 1), "relu")
    elif op == "pointwise":
        tensors = [x, _weight(shape.o, shape.c, 1, 1, dtype=dtype), _weight(shape.o, 1, dtype=dtype)[:, 0]]
        names = ["input", "weight", "bias"]

        def run(backend):
            return lambda x, w, b: XF.pointwise_conv2d(x, w, b, backend=backend)

        ref = reference.pointwise_conv2d
    else:
        tensors = [x, _weight(mid, 1, 3, 3, dtype=dtype), _weight(shape.o, mid, 1, 1, dtype=dtype),
                   _weight(shape.o, 1, dtype=dtype)[:, 0]]
        names = ["input", "depthwise_weight", "pointwise_weight", "bias"]

        def run(backend):
            return lambda x, dw, pw, b: XF.separable_conv2d(x, dw, pw, b, 2, pad, 1, "relu", "elu", backend=backend)

        def ref(x, dw, pw, b):
            return reference.separable_conv2d(x, dw, pw, b, (2, 2), pad, (1, 1), "relu", "elu")
    return run, ref, tensors, names


@pytest.mark.parametrize("op", OPS)
def test_strided_weights_and_bias(backend, op):
    # Weights and bias that are strided views into NaN-filled buffers (e.g. slices of a bigger
    # parameter): the kernels must honour their strides and offsets, and never read around them.
    run, ref, tensors, names = _op_case(op)
    tensors = [tensors[0]] + [poisoned(t, "sliced") for t in tensors[1:]]
    check_against_reference(run(backend), ref, tensors, names)


@pytest.mark.parametrize("grad_layout", ["sliced", "transposed", "channels_last"])
@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_grad_output(backend, op, grad_layout):
    # Autograd hands backward whatever strides the next op produced: views, channels_last, ...
    run, ref, tensors, names = _op_case(op)
    check_against_reference(run(backend), ref, tensors, names, place_grad_output=lambda g: poisoned(g, grad_layout))


@pytest.mark.parametrize("op", OPS)
def test_expanded_grad_output(backend, op):
    # y.sum().backward() passes a grad_output of stride 0 everywhere (an expanded scalar).
    run, ref, tensors, names = _op_case(op)
    leaves = [t.detach().requires_grad_() for t in tensors]
    run(backend)(*leaves).sum().backward()
    ref_leaves = [t.detach().requires_grad_() for t in tensors]
    ref(*ref_leaves).sum().backward()
    for name, got, want in zip(names, leaves, ref_leaves):
        assert rel_error(got.grad, want.grad) <= FIXED_TOLERANCE[torch.float64], name


@pytest.mark.parametrize("op", ["depthwise", "separable"])
def test_input_activation_leaves_input_untouched(backend, op):
    # input_activation='relu' is applied as the input is loaded: the caller's tensor keeps its
    # negative values, through forward and backward.
    run, _, tensors, _ = _op_case(op, dtype=torch.float32)
    x = tensors[0].requires_grad_()
    before = x.detach().clone()
    assert (before < 0).any()
    run(backend)(x, *tensors[1:]).square().sum().backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize("op", OPS)
def test_input_gradient_only(backend, op):
    # Frozen weights (requires_grad=False): only the input gradient is asked for, and it must not
    # depend on whether the weight gradients are computed too.
    run, ref, tensors, names = _op_case(op)
    x = tensors[0].detach().requires_grad_()
    run(backend)(x, *tensors[1:]).square().sum().backward()
    x_ref = tensors[0].detach().requires_grad_()
    ref(x_ref, *tensors[1:]).square().sum().backward()
    assert rel_error(x.grad, x_ref.grad) <= FIXED_TOLERANCE[torch.float64]


# --------------------------------------------------------------------------------------------------
# Autocast


@pytest.mark.parametrize("op", OPS)
def test_autocast_cpu_bfloat16(backend, op):
    # Under torch.autocast('cpu', bfloat16) xsep computes in bfloat16 like nn.Conv2d (float32 in,
    # bfloat16 out), gradients of the float32 leaves come back in float32, and the values are as
    # accurate as PyTorch's bfloat16 convolution on the same rounded inputs.
    run, ref, tensors, names = _op_case(op, dtype=torch.float32)
    bf16 = torch.bfloat16
    with torch.autocast("cpu", dtype=bf16):
        conv_dtype = torch.nn.Conv2d(3, 4, 1)(torch.randn(1, 3, 2, 2)).dtype
        grad_output = torch.randn(ref(*tensors).shape, dtype=torch.float64).to(bf16)
        got = results(run(backend), tensors, names, grad_output)
    assert conv_dtype == bf16
    assert got["output"].dtype == conv_dtype
    assert all(g.dtype == torch.float32 for name, g in got.items() if name != "output")
    want, torch_at_dtype = reference_results(ref, [t.to(bf16) for t in tensors], bf16, names, grad_output)
    assert_matches_reference(got, want, bf16, torch_at_dtype)


def test_autocast_accepts_mixed_dtypes(backend):
    # Under autocast, a float32 input with bfloat16 weights (a half-converted model) is accepted:
    # everything is cast to the autocast dtype, as for nn.Conv2d.
    x = torch.randn(1, 4, 6, 6)
    dw, pw = _weight(4, 1, 3, 3, dtype=torch.bfloat16), _weight(8, 4, 1, 1, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = XF.separable_conv2d(x, dw, pw, None, padding=1, backend=backend)
    args = (None, (1, 1), (1, 1, 1, 1), (1, 1))
    want, torch_at_dtype = reference_results(lambda x, dw, pw: reference.separable_conv2d(x, dw, pw, *args),
                                             [x.to(torch.bfloat16), dw, pw], torch.bfloat16,
                                             ["input", "depthwise_weight", "pointwise_weight"])
    assert y.dtype == torch.bfloat16
    assert_matches_reference({"output": y}, want, torch.bfloat16, torch_at_dtype)


# --------------------------------------------------------------------------------------------------
# Argument normalisation


@pytest.mark.parametrize(
    "size, kernel, stride, dilation, expected",
    [
        (5, 3, 1, 1, (1, 1)),  # the textbook case: symmetric, like padding=1
        (7, 2, 1, 1, (0, 1)),  # even kernel: the odd pixel goes after (bottom/right), as in TF
        (5, 4, 1, 1, (1, 2)),
        (8, 3, 2, 1, (0, 1)),  # stride 2, even input: ceil(8/2)=4 outputs need 1 pixel, after
        (7, 3, 2, 1, (1, 1)),  # stride 2, odd input: symmetric
        (10, 5, 3, 1, (2, 2)),  # stride 3: 4 outputs, (4-1)*3+5-10 = 4
        (9, 3, 1, 2, (2, 2)),  # dilation 2: span 5
        (8, 3, 2, 3, (2, 3)),  # dilation 3 with stride 2: span 7, (4-1)*2+7-8 = 5
        (1, 7, 2, 1, (3, 3)),  # 1-pixel input, big kernel: padding on both sides
        (8, 1, 2, 1, (0, 0)),  # negative "total" clamps to 0
        (6, 2, 2, 1, (0, 0)),  # stride = kernel: no padding
        (11, 4, 4, 1, (0, 1)),  # ceil(11/4)=3 outputs, (3-1)*4+4-11 = 1
    ],
)
def test_same_padding_hand_computed(size, kernel, stride, dilation, expected):
    # TensorFlow's 'same': total = max((ceil(size/stride) - 1) * stride + span - size, 0),
    # before = total // 2, after = the rest. Worked out by hand, independently of the implementation.
    assert XF.same_padding(size, kernel, stride, dilation) == expected


def test_same_padding_gives_ceil_output():
    # The defining property of TF 'same': output size ceil(size / stride), padding split with at
    # most one more pixel after than before; checked against PyTorch's own output-size arithmetic.
    for size in range(1, 12):
        for kernel in (1, 2, 3, 4, 5, 7):
            for stride in (1, 2, 3):
                for dilation in (1, 2):
                    before, after = XF.same_padding(size, kernel, stride, dilation)
                    assert 0 <= after - before <= 1
                    x = torch.empty(1, 1, size + before + after, 1, device="meta")
                    w = torch.empty(1, 1, kernel, 1, device="meta")
                    out = torch_F.conv2d(x, w, stride=(stride, 1), dilation=(dilation, 1))
                    assert out.shape[2] == math.ceil(size / stride), (size, kernel, stride, dilation)


@pytest.mark.parametrize(
    "padding, expected",
    [
        (0, (0, 0, 0, 0)),
        (2, (2, 2, 2, 2)),
        ((1, 3), (1, 1, 3, 3)),  # (h, w), as in XF.conv2d
        ([1, 3], (1, 1, 3, 3)),  # any sequence
        ((1, 2, 3, 4), (1, 2, 3, 4)),  # (top, bottom, left, right)
        ("valid", (0, 0, 0, 0)),
        # 8x9 input, 3x5 kernel, stride 2: H: (4-1)*2+3-8 = 1 -> (0, 1); W: (5-1)*2+5-9 = 4 -> (2, 2)
        ("same", (0, 1, 2, 2)),
    ],
    ids=["int0", "int", "pair", "list", "4-tuple", "valid", "same"],
)
def test_normalize_padding_forms(padding, expected):
    # Every accepted form of `padding` becomes (top, bottom, left, right).
    assert XF.normalize_padding(padding, (8, 9), (3, 5), (2, 2), (1, 1)) == expected


def test_padding_forms_agree(backend):
    # The forms are interchangeable in the ops: int, pair, 4-tuple and a list give one result.
    x, w = torch.randn(1, 3, 6, 7), _weight(3, 1, 3, 3, dtype=torch.float32)
    outs = [XF.depthwise_conv2d(x, w, padding=p, backend=backend) for p in (1, (1, 1), (1, 1, 1, 1), [1, 1, 1, 1])]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_stride_and_dilation_forms(backend):
    # stride/dilation: an int or an (h, w) pair (a list too), like XF.conv2d; the result matches
    # PyTorch's own depthwise convolution for the same arguments.
    x, w = torch.randn(1, 3, 9, 10, dtype=torch.float64), _weight(6, 1, 3, 2, dtype=torch.float64)
    y = XF.depthwise_conv2d(x, w, None, [2, 1], (1, 2), (2, 1), backend=backend)
    want = torch_F.conv2d(x, w, None, (2, 1), (1, 2), (2, 1), groups=3)
    assert rel_error(y, want) <= FIXED_TOLERANCE[torch.float64]


# --------------------------------------------------------------------------------------------------
# NCHW at sizes the sweep does not reach

# The fused NCHW op works on bands of output rows of about 512 pixels once C*M >= 512 (and the
# pointwise NCHW weight gradient packs images side by side below 512 pixels a plane): every
# SHAPES case fits one band. 512 mid channels on a 24x30 image give two bands at stride 1.
_BANDED = Shape(2, 256, 24, 30, 8)


@pytest.mark.parametrize("dtype", DTYPES, ids=[DTYPE_NAMES[d] for d in DTYPES])
@pytest.mark.parametrize("stride,in_act,mid_act,dw_bias", [
    (1, "relu", "relu6", True), (1, None, None, False), (2, None, "elu", True), (1, None, "relu", False)])
def test_nchw_separable_in_bands_matches_reference(native, dtype, stride, in_act, mid_act, dw_bias):
    # Forward and every gradient of the fused op on NCHW inputs split into several bands (stride 1)
    # or one (stride 2), several images, with and without the depthwise bias and mid activations.
    shape, m = _BANDED, 2
    mid = shape.c * m
    x = torch.randn(shape.n, shape.c, shape.h, shape.w, dtype=torch.float64).to(dtype)
    tensors = [x, _weight(mid, 1, 3, 3, dtype=dtype), _weight(shape.o, mid, 1, 1, dtype=dtype),
               _weight(shape.o, 1, dtype=dtype)[:, 0], _weight(mid, 1, dtype=dtype)[:, 0] if dw_bias else None]

    def run(x, dw, pw, bias, dwb):
        return XF.separable_conv2d(x, dw, pw, bias, stride, 1, 1, in_act, mid_act, backend="native",
                                   depthwise_bias=dwb)

    def ref(x, dw, pw, bias, dwb):
        return reference.separable_conv2d(x, dw, pw, bias, (stride, stride), (1, 1, 1, 1), (1, 1), in_act or "none",
                                          mid_act or "none", dwb)

    got = check_against_reference(run, ref, tensors,
                                  ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"])
    check_memory_formats(x, got["output"], got["grad_input"])


# Planes under 256 output pixels run their GEMMs on groups of images side by side (image_groups
# in csrc/cpu/host.h: at least ceil(512 / plane) images a group, the batch split evenly), the
# fused op's band holding the group's depthwise outputs. (batch, input side(s), stride): 11 images
# of 13x11 (143 pixels, 4 a group): groups of 5 and 6; 17 of 16x16 at stride 2 (8x8 out, 8 a
# group): 8 and 9; 3 images of 7x9 (63 pixels): one group of 3, narrower than 512.
_GROUPED = [(11, (13, 11), 1), (17, (16, 16), 2), (3, (7, 9), 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=[DTYPE_NAMES[d] for d in DTYPES])
@pytest.mark.parametrize("n,hw,stride", _GROUPED, ids=["2groups-odd", "2groups-stride2", "1group"])
def test_nchw_image_groups_native_matches_reference(native, dtype, n, hw, stride):
    # Pointwise and fused op, forward and every gradient, on NCHW inputs whose small planes make
    # the GEMMs run on groups of images side by side (copied in and back per image).
    torch.manual_seed(0)
    c, m, o = 5, 2, 7
    x = torch.randn(n, c, *hw, dtype=torch.float64).to(dtype)
    dw, pw = _weight(c * m, 1, 3, 3, dtype=dtype), _weight(o, c * m, 1, 1, dtype=dtype)
    bias, dwb = _weight(o, 1, dtype=dtype)[:, 0], _weight(c * m, 1, dtype=dtype)[:, 0]

    def run(x, dw, pw, bias, dwb):
        return XF.separable_conv2d(x, dw, pw, bias, stride, 1, 1, "relu", "relu6", backend="native",
                                   depthwise_bias=dwb)

    def ref(x, dw, pw, bias, dwb):
        return reference.separable_conv2d(x, dw, pw, bias, (stride, stride), (1, 1, 1, 1), (1, 1), "relu", "relu6",
                                          dwb)

    got = check_against_reference(run, ref, [x, dw, pw, bias, dwb],
                                  ["input", "depthwise_weight", "pointwise_weight", "bias", "depthwise_bias"])
    check_memory_formats(x, got["output"], got["grad_input"])
    xp = torch.randn(n, c * m, *hw, dtype=torch.float64).to(dtype)
    got = check_against_reference(lambda x, w, b: XF.pointwise_conv2d(x, w, b, backend="native"),
                                  reference.pointwise_conv2d, [xp, pw, bias], ["input", "weight", "bias"])
    check_memory_formats(xp, got["output"], got["grad_input"])


def _nchw_weight_grads():
    torch.manual_seed(0)
    grads = {}
    for h, w in ((10, 10), (24, 30)):  # pointwise: images packed side by side; one GEMM per image
        x = torch.randn(3, 64, h, w, requires_grad=True)
        pw = torch.randn(48, 64, 1, 1, requires_grad=True)
        XF.pointwise_conv2d(x, pw, None, backend="native").backward(torch.randn(3, 48, h, w))
        grads[f"pointwise {h}x{w}"] = pw.grad
    shape = _BANDED
    x = torch.randn(shape.n, shape.c, shape.h, shape.w)
    dw, pw = torch.randn(2 * shape.c, 1, 3, 3), torch.randn(shape.o, 2 * shape.c, 1, 1)
    dwb = torch.randn(2 * shape.c)
    for t in (dw, pw, dwb):
        t.requires_grad_(True)
    y = XF.separable_conv2d(x, dw, pw, None, 1, 1, 1, "relu", "relu6", backend="native", depthwise_bias=dwb)
    y.backward(torch.randn_like(y))
    grads.update({"separable depthwise": dw.grad, "separable pointwise": pw.grad, "separable depthwise bias": dwb.grad})
    x = torch.randn(11, 8, 13, 11)  # two image groups (_GROUPED)
    dw, pw, dwb = torch.randn(8, 1, 3, 3), torch.randn(16, 8, 1, 1), torch.randn(8)
    for t in (dw, pw, dwb):
        t.requires_grad_(True)
    y = XF.separable_conv2d(x, dw, pw, None, 1, 1, 1, "relu", "relu6", backend="native", depthwise_bias=dwb)
    y.backward(torch.randn_like(y))
    grads.update({"grouped depthwise": dw.grad, "grouped pointwise": pw.grad, "grouped depthwise bias": dwb.grad})
    return grads


def test_nchw_weight_gradients_independent_of_thread_count(native):
    # The NCHW weight gradients sum images and pixels in an order fixed by the shape (GEMMs fed
    # fixed blocks of pixels, image after image or images packed side by side; bands in order):
    # bitwise equal at 1 and 2 threads, in several bands and images.
    one, two = at_one_and_two_threads(_nchw_weight_grads)
    different = [k for k in one if not torch.equal(one[k], two[k])]
    assert not different, f"depend on the thread count: {different}"
