"""Bad input raises a clear error naming the problem, never a crash or a wrong result: the
functional API (on every backend), the raw torch.ops.xsep ops (the C++ checks in
csrc/common/conv_args.cpp, and the fake kernels' for meta tensors), and the modules' constructors."""

from __future__ import annotations

import pytest
import torch
from helpers import require_native

import xsep
import xsep.functional as XF

# Shapes shared by the cases: input [2, 3, 8, 8]; depthwise weight [6, 1, 3, 3] (M = 2);
# pointwise weight [5, 6, 1, 1]; bias [5] (separable) or [6] (depthwise).


def _x(*shape, **kw):
    return torch.randn(*(shape or (2, 3, 8, 8)), **kw)


def _dw(*shape, **kw):
    return torch.randn(*(shape or (6, 1, 3, 3)), **kw)


def _pw(*shape, **kw):
    return torch.randn(*(shape or (5, 6, 1, 1)), **kw)


def dw_call(x=None, w=None, b=None, **kw):
    return lambda backend: XF.depthwise_conv2d(_x() if x is None else x, _dw() if w is None else w, b,
                                              **{"padding": 1, **kw}, backend=backend)


def sep_call(x=None, dw=None, pw=None, b=None, **kw):
    return lambda backend: XF.separable_conv2d(_x() if x is None else x, _dw() if dw is None else dw,
                                              _pw() if pw is None else pw, b, **{"padding": 1, **kw},
                                              backend=backend)


def pw_call(x=None, w=None, b=None):
    return lambda backend: XF.pointwise_conv2d(_x() if x is None else x, _pw(5, 3, 1, 1) if w is None else w, b,
                                              backend=backend)


# (id, call, exception, message pattern). Built lazily (seeded per test) by calling `call(backend)`.
FUNCTIONAL_CASES = [
    # Shapes
    ("input_rank", dw_call(x=_x(3, 8, 8)), ValueError, r"input must be a 4-D tensor \[N, C, H, W\], got shape \(3, 8, 8\)"),
    ("input_not_tensor", lambda backend: XF.depthwise_conv2d([[1.0]], _dw(), backend=backend), TypeError,
     "input must be a torch.Tensor, got list"),
    ("input_no_channels", dw_call(x=_x(2, 0, 8, 8)), ValueError, "input must have at least one channel"),
    ("input_no_pixels", dw_call(x=_x(2, 3, 0, 8)), ValueError, "at least one channel and one pixel"),
    ("depthwise_weight_channels", dw_call(w=_dw(4, 1, 3, 3)), ValueError,
     r"weight must have shape \[C \* M, 1, kh, kw\] for input channels C = 3 and a depth multiplier M >= 1, "
     r"got \(4, 1, 3, 3\)"),
    ("depthwise_weight_rank", dw_call(w=_dw(6, 3, 3)), ValueError, r"weight must have shape \[C \* M, 1, kh, kw\]"),
    ("depthwise_weight_dim1", dw_call(w=_dw(6, 3, 3, 3)), ValueError, r"weight must have shape \[C \* M, 1, kh, kw\]"),
    ("depthwise_weight_empty_kernel", dw_call(w=_dw(6, 1, 0, 3)), ValueError, r"got \(6, 1, 0, 3\)"),
    ("depthwise_bias_shape", dw_call(b=torch.randn(5)), ValueError, r"bias must have shape \[6\], got \(5,\)"),
    ("separable_pointwise_channels", sep_call(pw=_pw(5, 4, 1, 1)), ValueError,
     r"pointwise_weight must have shape \[O, 6, 1, 1\], got \(5, 4, 1, 1\)"),
    ("separable_pointwise_kernel", sep_call(pw=_pw(5, 6, 3, 3)), ValueError, r"pointwise_weight must have shape \[O, 6, 1, 1\]"),
    ("separable_depthwise_channels", sep_call(dw=_dw(7, 1, 3, 3)), ValueError,
     r"depthwise_weight must have shape \[C \* M, 1, kh, kw\] for input channels C = 3"),
    ("separable_bias_shape", sep_call(b=torch.randn(6)), ValueError, r"bias must have shape \[5\], got \(6,\)"),
    ("separable_depthwise_bias_shape", sep_call(depthwise_bias=torch.randn(5)), ValueError,
     r"depthwise_bias must have shape \[6\], got \(5,\)"),
    ("separable_depthwise_bias_dtype", sep_call(depthwise_bias=torch.randn(6, dtype=torch.float64)), TypeError,
     r"depthwise_bias has dtype torch.float64 but input has dtype torch.float32"),
    ("pointwise_weight_channels", pw_call(w=_pw(5, 4, 1, 1)), ValueError, r"weight must have shape \[O, 3, 1, 1\], got \(5, 4, 1, 1\)"),
    ("pointwise_weight_kernel", pw_call(w=_pw(5, 3, 3, 3)), ValueError, r"weight must have shape \[O, 3, 1, 1\]"),
    ("pointwise_bias_shape", pw_call(b=torch.randn(3)), ValueError, r"bias must have shape \[5\]"),
    # Devices and dtypes ('meta' stands in for another device)
    ("weight_on_other_device", dw_call(w=_dw(device="meta")), ValueError, "weight is on meta but input is on cpu"),
    ("bias_on_other_device", sep_call(b=torch.randn(5, device="meta")), ValueError, "bias is on meta but input is on cpu"),
    ("pointwise_weight_on_other_device", sep_call(pw=_pw(device="meta")), ValueError,
     "pointwise_weight is on meta but input is on cpu"),
    ("weight_dtype", dw_call(w=_dw(dtype=torch.float64)), TypeError,
     "weight has dtype torch.float64 but input has dtype torch.float32"),
    ("bias_dtype", pw_call(b=torch.randn(5, dtype=torch.bfloat16)), TypeError, "bias has dtype torch.bfloat16"),
    ("integer_input", dw_call(x=_x().long(), w=_dw().long()), TypeError,
     "input has dtype torch.int64; supported are float32, float64, float16 and bfloat16"),
    ("complex_input", pw_call(x=_x(dtype=torch.complex64), w=_pw(5, 3, 1, 1, dtype=torch.complex64)), TypeError,
     "input has dtype torch.complex64; supported are"),
    # Geometry
    ("negative_padding", dw_call(padding=-1), ValueError, r"padding must be >= 0, got \(-1, -1\)"),
    ("negative_padding_4", dw_call(padding=(1, -1, 0, 0)), ValueError, r"padding must be non-negative, got \(1, -1, 0, 0\)"),
    ("padding_3_tuple", dw_call(padding=(1, 1, 1)), ValueError,
     r"padding must be an int, an \(h, w\) pair, a \(top, bottom, left, right\) 4-tuple, 'valid' or 'same', got \(1, 1, 1\)"),
    ("padding_unknown_string", sep_call(padding="full"), ValueError, r"padding must be .* 'valid' or 'same', got 'full'"),
    ("padding_float", dw_call(padding=1.0), ValueError, "padding must be an int or a pair of ints, got 1.0"),
    ("zero_stride", dw_call(stride=0), ValueError, r"stride must be >= 1, got \(0, 0\)"),
    ("zero_stride_w", sep_call(stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    ("negative_stride", dw_call(stride=-2), ValueError, r"stride must be >= 1"),
    ("float_stride", dw_call(stride=1.5), ValueError, "stride must be an int or a pair of ints, got 1.5"),
    ("bool_stride", dw_call(stride=True), ValueError, "stride must be an int or a pair of ints, got True"),
    # A bool inside a tuple is not an int (the plain-tuple fast path checks types exactly)
    ("bool_in_stride_pair", dw_call(stride=(1, True)), ValueError, r"stride must be an int or a pair of ints, got \(1, True\)"),
    ("bool_in_padding_4", dw_call(padding=(1, 1, False, 1)), ValueError, r"padding must hold ints, got \(1, 1, False, 1\)"),
    ("zero_dilation", sep_call(dilation=(0, 1)), ValueError, r"dilation must be >= 1, got \(0, 1\)"),
    ("dilation_3", dw_call(dilation=(1, 1, 1)), ValueError, r"dilation must be an int or a pair of ints, got \(1, 1, 1\)"),
    ("kernel_larger_than_input", dw_call(x=_x(2, 3, 5, 5), w=_dw(6, 1, 7, 7), padding=0), ValueError,
     r"the kernel \(\(7, 7\), dilation \(1, 1\)\) spans 7 pixels along H, more than the padded input's 5"),
    ("dilated_kernel_larger_than_input", sep_call(x=_x(2, 3, 8, 6), padding=0, dilation=(1, 3)), ValueError,
     r"spans 7 pixels along W, more than the padded input's 6"),
    # Activations
    ("unknown_input_activation", dw_call(input_activation="gelu"), ValueError,
     "input_activation must be None or one of 'relu', got 'gelu'"),
    ("mid_activation_as_input_activation", sep_call(input_activation="relu6"), ValueError,
     "input_activation must be None or one of 'relu', got 'relu6'"),
    ("unknown_mid_activation", sep_call(mid_activation="tanh"), ValueError,
     "mid_activation must be None or one of 'relu', 'relu6', 'elu', got 'tanh'"),
    ("activation_module_not_name", sep_call(mid_activation=torch.nn.ReLU()), ValueError,
     "mid_activation must be None or one of"),
]


@pytest.mark.parametrize("call, exception, match", [c[1:] for c in FUNCTIONAL_CASES],
                         ids=[c[0] for c in FUNCTIONAL_CASES])
def test_functional_rejects(backend, call, exception, match):
    # Each bad argument is refused up front, whichever backend was asked for, with the argument
    # named: ValueError for bad values and shapes, TypeError for bad types and dtypes.
    with pytest.raises(exception, match=match):
        call(backend)


# --------------------------------------------------------------------------------------------------
# Backends


def test_unknown_backend_argument():
    # A typo in backend= names the choices.
    with pytest.raises(ValueError, match="unknown backend 'cuda'; expected one of native, triton, torch"):
        dw_call()("cuda")


def test_unknown_backend_env(monkeypatch):
    # A typo in XSEP_BACKEND says where it came from.
    monkeypatch.setenv("XSEP_BACKEND", "fast")
    with pytest.raises(ValueError, match="unknown XSEP_BACKEND 'fast'; expected one of native, triton, torch"):
        dw_call()(None)


@pytest.mark.parametrize("source", ["argument", "env"])
def test_unavailable_backend_says_why(source, monkeypatch):
    # Asking for Triton on CPU tensors fails, saying which backend, where the choice came from,
    # on which device, and why it cannot run.
    monkeypatch.delenv("XSEP_BACKEND", raising=False)
    if source == "env":
        monkeypatch.setenv("XSEP_BACKEND", "triton")
    label = "backend" if source == "argument" else "XSEP_BACKEND"
    with pytest.raises(RuntimeError, match=rf"xsep backend 'triton' \({label}\) cannot run on cpu: \S.+"):
        sep_call()("triton" if source == "argument" else None)


def test_native_backend_on_unsupported_device():
    # backend='native' on meta tensors: refused with the reason (no kernels for that device, or
    # the library did not load and why), rather than silently running something else.
    x, w = _x(device="meta"), _dw(device="meta")
    with pytest.raises(RuntimeError, match=r"xsep backend 'native' \(backend\) cannot run on meta: "
                                           r"(xsep has no native kernels for 'meta' tensors|"
                                           r"the compiled library could not be loaded)"):
        XF.depthwise_conv2d(x, w, backend="native")


# --------------------------------------------------------------------------------------------------
# The raw ops (C++ checks)

ST, PAD, DIL = (1, 1), (1, 1, 1, 1), (1, 1)


def raw_dw(x=None, w=None, b=None, stride=ST, padding=PAD, dilation=DIL, act="none"):
    return lambda: torch.ops.xsep.depthwise_conv2d(_x() if x is None else x, _dw() if w is None else w, b,
                                                   stride, padding, dilation, act)


def raw_sep(x=None, dw=None, pw=None, b=None, stride=ST, padding=PAD, dilation=DIL, act="none", mid="none",
            db=None):
    return lambda: torch.ops.xsep.separable_conv2d(_x() if x is None else x, _dw() if dw is None else dw,
                                                   _pw() if pw is None else pw, b, stride, padding, dilation,
                                                   act, mid, db)


def raw_pw(x=None, w=None, b=None):
    return lambda: torch.ops.xsep.pointwise_conv2d(_x() if x is None else x, _pw(5, 3, 1, 1) if w is None else w, b)


# Messages start with the op's name; csrc spells it "xsep.op" or "xsep::op" (either is accepted).
DW = r"xsep(\.|::)depthwise_conv2d: "
SEP = r"xsep(\.|::)separable_conv2d: "
PW = r"xsep(\.|::)pointwise_conv2d: "

RAW_CASES = [
    ("input_rank", raw_dw(x=_x(3, 8, 8)), ValueError,
     DW + r"input must be a 4-D tensor \[N, C, H, W\], got 3-D with shape \[3, 8, 8\]"),
    ("input_no_channels", raw_sep(x=_x(2, 0, 8, 8)), ValueError, SEP + "input must have at least one channel"),
    ("integer_input", raw_pw(x=_x().long(), w=_pw(5, 3, 1, 1).long()), TypeError,
     PW + "input has dtype Long; supported are float32, float64, float16 and bfloat16"),
    ("depthwise_weight_channels", raw_dw(w=_dw(4, 1, 3, 3)), ValueError,
     DW + r"weight must have shape \[C \* M, 1, kh, kw\] for input channels C = 3 and a depth multiplier "
          r"M >= 1, got \[4, 1, 3, 3\]"),
    ("depthwise_bias_shape", raw_dw(b=torch.randn(5)), ValueError, DW + r"bias must have shape \[6\], got \[5\]"),
    ("separable_pointwise_weight", raw_sep(pw=_pw(5, 4, 1, 1)), ValueError,
     SEP + r"pointwise_weight must have shape \[O, 6, 1, 1\], got \[5, 4, 1, 1\]"),
    ("separable_bias_shape", raw_sep(b=torch.randn(6)), ValueError, SEP + r"bias must have shape \[5\], got \[6\]"),
    ("separable_depthwise_bias_shape", raw_sep(db=torch.randn(5)), ValueError,
     SEP + r"depthwise_bias must have shape \[6\], got \[5\]"),
    ("separable_depthwise_bias_device", raw_sep(db=torch.randn(6, device="meta")), RuntimeError,
     SEP + "depthwise_bias is on meta but input is on cpu; all tensors must be on one device"),
    ("separable_backward_depthwise_bias_dtype", lambda: torch.ops.xsep.separable_conv2d_backward(
        torch.randn(2, 5, 8, 8), _x(), _dw(), _pw(), ST, PAD, DIL, "none", "none", torch.randn(6).half()), TypeError,
     r"xsep(\.|::)separable_conv2d_backward: depthwise_bias has dtype Half but input has dtype Float"),
    ("pointwise_weight", raw_pw(w=_pw(5, 4, 1, 1)), ValueError,
     PW + r"weight must have shape \[O, C, 1, 1\] for input channels C = 3, got \[5, 4, 1, 1\]"),
    ("pointwise_bias_shape", raw_pw(b=torch.randn(4)), ValueError, PW + r"bias must have shape \[5\], got \[4\]"),
    ("weight_on_other_device", raw_dw(w=_dw(device="meta")), RuntimeError,
     DW + "weight is on meta but input is on cpu; all tensors must be on one device"),
    ("input_on_other_device", raw_sep(x=_x(device="meta")), RuntimeError,
     SEP + "depthwise_weight is on cpu but input is on meta; all tensors must be on one device"),
    ("weight_dtype", raw_dw(w=_dw(dtype=torch.float64)), TypeError,
     DW + "weight has dtype Double but input has dtype Float; all tensors must have one dtype"),
    ("pointwise_weight_dtype", raw_sep(pw=_pw(dtype=torch.float16)), TypeError,
     SEP + "pointwise_weight has dtype Half but input has dtype Float"),
    ("zero_stride", raw_dw(stride=(0, 1)), ValueError, DW + r"stride must be two positive ints, got \[0, 1\]"),
    ("negative_padding", raw_sep(padding=(1, -1, 0, 0)), ValueError,
     SEP + r"padding must be four non-negative ints \(top, bottom, left, right\), got \[1, -1, 0, 0\]"),
    ("padding_length", raw_dw(padding=(1, 1)), (ValueError, RuntimeError), r"padding"),
    ("zero_dilation", raw_dw(dilation=(1, 0)), ValueError, DW + r"dilation must be two positive ints, got \[1, 0\]"),
    ("kernel_larger_than_input", raw_dw(x=_x(2, 3, 5, 5), w=_dw(6, 1, 7, 7), padding=(0, 0, 0, 0)), ValueError,
     DW + r"the kernel \(7x7, dilation \[1, 1\], spanning 7x7\) is larger than the padded input \(5x5\)"),
    ("unknown_input_activation", raw_dw(act="relu6"), ValueError,
     DW + "unknown input_activation 'relu6'; expected 'none' or 'relu'"),
    ("unknown_mid_activation", raw_sep(mid="gelu"), ValueError,
     SEP + "unknown mid_activation 'gelu'; expected 'none', 'relu', 'relu6' or 'elu'"),
    ("grad_output_shape", lambda: torch.ops.xsep.depthwise_conv2d_grad_input(
        torch.randn(2, 6, 7, 8), _x(), _dw(), ST, PAD, DIL, "none"), ValueError,
     r"xsep(\.|::)depthwise_conv2d_grad_input: grad_output must have shape \[2, 6, 8, 8\], got \[2, 6, 7, 8\]"),
    ("depthwise_backward_grad_output_shape", lambda: torch.ops.xsep.depthwise_conv2d_backward(
        torch.randn(2, 6, 8, 7), _x(), _dw(), ST, PAD, DIL, "none"), ValueError,
     r"xsep(\.|::)depthwise_conv2d_backward: grad_output must have shape \[2, 6, 8, 8\], got \[2, 6, 8, 7\]"),
    ("depthwise_backward_weight_dtype", lambda: torch.ops.xsep.depthwise_conv2d_backward(
        torch.randn(2, 6, 8, 8), _x(), _dw().double(), ST, PAD, DIL, "relu"), TypeError,
     r"xsep(\.|::)depthwise_conv2d_backward: weight has dtype Double but input has dtype Float"),
    ("grad_output_dtype", lambda: torch.ops.xsep.separable_conv2d_backward(
        torch.randn(2, 5, 8, 8, dtype=torch.float64), _x(), _dw(), _pw(), ST, PAD, DIL, "none", "none"), TypeError,
     r"xsep(\.|::)separable_conv2d_backward: grad_output has dtype Double but input has dtype Float"),
    ("pointwise_grad_weight_shape", lambda: torch.ops.xsep.pointwise_conv2d_grad_weight(
        torch.randn(2, 4, 8, 8), _x(), _pw(5, 3, 1, 1)), ValueError,
     r"xsep(\.|::)pointwise_conv2d_grad_weight: grad_output must have shape \[2, 5, 8, 8\]"),
]


@pytest.mark.parametrize("call, exception, match", [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_raw_op_rejects(call, exception, match):
    # The compiled ops check their own arguments (they are public as torch.ops.xsep.*): the
    # messages name the op and the argument; C++ TORCH_CHECK_VALUE/TYPE arrive as ValueError/TypeError.
    require_native()
    with pytest.raises(exception, match=match):
        call()


def test_fake_kernel_rejects_bad_weight():
    # On meta tensors (torch.compile's fake tensors too) the fake kernel refuses a wrong weight
    # rather than inventing an output shape, with the compiled op's error (xsep/ops/checks.py).
    require_native()
    with pytest.raises(ValueError, match=DW + r"weight must have shape \[C \* M, 1, kh, kw\] for input channels C = 3"):
        raw_dw(x=_x(device="meta"), w=_dw(4, 1, 3, 3, device="meta"))()


# --------------------------------------------------------------------------------------------------
# Module constructors

CONSTRUCTOR_CASES = [
    ("zero_kernel", lambda: xsep.SeparableConv2d(3, 4, 0), "kernel_size must be >= 1, got \\(0, 0\\)"),
    ("kernel_1_tuple", lambda: xsep.SeparableConv2d(3, 4, (3,)), r"kernel_size must be an int or a pair of ints, got \(3,\)"),
    ("kernel_3_tuple", lambda: xsep.DepthwiseConv2d(3, (3, 3, 3)), "kernel_size must be an int or a pair of ints"),
    ("float_kernel", lambda: xsep.DepthwiseConv2d(3, 3.0), "kernel_size must be an int or a pair of ints, got 3.0"),
    ("zero_in_channels", lambda: xsep.SeparableConv2d(0, 4, 3), "in_channels must be a positive int, got 0"),
    ("negative_out_channels", lambda: xsep.SeparableConv2d(3, -4, 3), "out_channels must be a positive int, got -4"),
    ("float_in_channels", lambda: xsep.DepthwiseConv2d(3.0, 3), "in_channels must be a positive int, got 3.0"),
    ("zero_depth_multiplier", lambda: xsep.DepthwiseConv2d(3, 3, depth_multiplier=0),
     "depth_multiplier must be a positive int, got 0"),
    ("zero_stride", lambda: xsep.SeparableConv2d(3, 4, 3, stride=0), r"stride must be >= 1"),
    ("zero_dilation", lambda: xsep.DepthwiseConv2d(3, 3, dilation=(1, 0)), r"dilation must be >= 1"),
    ("negative_padding", lambda: xsep.SeparableConv2d(3, 4, 3, padding=-1), "padding must be >= 0"),
    ("unknown_padding", lambda: xsep.DepthwiseConv2d(3, 3, padding="full"), "'valid' or 'same', got 'full'"),
    ("unknown_input_activation", lambda: xsep.DepthwiseConv2d(3, 3, input_activation="elu"),
     "input_activation must be None or one of 'relu', got 'elu'"),
    ("unknown_mid_activation", lambda: xsep.SeparableConv2d(3, 4, 3, mid_activation="gelu"),
     "mid_activation must be None or one of 'relu', 'relu6', 'elu', got 'gelu'"),
    ("unknown_backend", lambda: xsep.SeparableConv2d(3, 4, 3, backend="cuda"),
     "unknown backend 'cuda'; expected one of native, triton, torch"),
]


@pytest.mark.parametrize("make, match", [c[1:] for c in CONSTRUCTOR_CASES], ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_module_constructor_rejects(make, match):
    # Mistakes in a model definition fail when the model is built, not at its first forward.
    with pytest.raises(ValueError, match=match):
        make()


def test_module_forward_rejects_wrong_channels(backend):
    # A module fed the wrong number of channels says which channel count it got.
    m = xsep.SeparableConv2d(3, 4, 3, backend=backend)
    with pytest.raises(ValueError, match="for input channels C = 5"):
        m(_x(1, 5, 8, 8))
