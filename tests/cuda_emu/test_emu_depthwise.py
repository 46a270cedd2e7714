"""The CUDA depthwise kernels (csrc/cuda/depthwise_conv2d_kernels.cu) run on the CPU by the
emulator (tests/cuda_emu, no GPU needed): every launcher against the float64 reference, on shapes
small enough for the emulator but reaching each code path: the sliding windows for k = 3, 5, 7 and
the general kernel size, 16-byte vectors (channels a multiple of 16 bytes) and scalars (odd
channel counts, depth multiplier 2, a misaligned base), strides, dilations, asymmetric padding,
relu on the input, and the weight gradient's reduction in more than one chunk. Outputs start
NaN-filled (bindings.cpp), so an element a kernel does not write fails the comparison."""

from __future__ import annotations

import pytest
import torch

from xsep.ops import reference
from xsep.testing import TENSOR_NAMES, assert_matches_reference, reference_results

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16


def _case(dtype, c, k, *, m=1, stride=(1, 1), dilation=(1, 1), padding=None, relu=False, bias=False,
          misaligned=False, several_chunks=False, size=(12, 13)):
    kh, kw = k
    if padding is None:  # (top, bottom, left, right): "same" at unit stride
        padding = ((kh - 1) * dilation[0] // 2,) * 2 + ((kw - 1) * dilation[1] // 2,) * 2
    return dict(dtype=dtype, c=c, m=m, k=k, stride=stride, dilation=dilation, padding=padding, relu=relu,
                bias=bias, misaligned=misaligned, several_chunks=several_chunks, size=size)


CASES = [
    # the shared-memory tiled forward (16-byte vectors, unit stride, k = 3, 5, 7): 16 x 16 output
    # tiles of 4 channel vectors, past a tile edge in rows, columns and channels
    _case(bf16, 40, (3, 3), relu=True, bias=True, size=(19, 35)),
    _case(f32, 12, (7, 7), padding=(3, 2, 4, 1), size=(19, 20)),
    _case(f64, 6, (5, 5), relu=True, size=(17, 18)),
    # 16-byte vectors (float 4, double 2, half 8 channels), sliding windows k = 3, 5, 7
    _case(f32, 8, (3, 3), bias=True, several_chunks=True),
    _case(bf16, 16, (5, 5), stride=(2, 1), relu=True),
    _case(f16, 8, (7, 7), padding=(3, 2, 4, 1), bias=True),
    # vectors off the sliding window (stride or dilation along W), general kernel sizes
    _case(f64, 6, (3, 3), stride=(2, 2), relu=True, bias=True),
    _case(f32, 4, (5, 5), dilation=(1, 2), padding=(1, 3, 4, 4)),
    _case(bf16, 8, (2, 4), padding=(0, 1, 2, 1), bias=True, several_chunks=True),
    # scalars: odd channel counts, depth multiplier 2, a misaligned base
    _case(f32, 5, (2, 4), padding=(0, 2, 1, 0), relu=True, several_chunks=True),
    _case(bf16, 5, (3, 3), m=2, dilation=(2, 2), bias=True),
    _case(f16, 3, (7, 7), m=2, stride=(2, 2), relu=True),
    _case(f64, 7, (1, 3), m=2, stride=(1, 2), padding=(0, 0, 1, 2), bias=True),
    _case(f32, 3, (5, 5), stride=(2, 1), dilation=(2, 1), padding=(3, 1, 2, 2)),
    _case(f16, 16, (3, 3), misaligned=True, relu=True, bias=True, several_chunks=True),
]


def _id(case):
    kh, kw = case["k"]
    parts = [str(case["dtype"]).removeprefix("torch."), f"c{case['c']}m{case['m']}", f"k{kh}x{kw}",
             "s{}{}".format(*case["stride"]), "d{}{}".format(*case["dilation"]), "p{}{}{}{}".format(*case["padding"]),
             "{}x{}".format(*case["size"])]
    parts += [flag for flag in ("relu", "bias", "misaligned") if case[flag]]
    return "-".join(parts)


def _placed(t: torch.Tensor, misaligned: bool) -> torch.Tensor:
    """A contiguous copy of `t`, one element past a 16-byte boundary when `misaligned` (the
    kernels must then not use 16-byte accesses)."""
    if not misaligned:
        return t.contiguous()
    flat = torch.empty(t.numel() + 1, dtype=t.dtype)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    assert view.data_ptr() % 16 != 0
    return view


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_reference(emu, case):
    dtype, c, m, (kh, kw) = case["dtype"], case["c"], case["m"], case["k"]
    acc = f64 if dtype == f64 else f32
    n, (h, w_) = 2, case["size"]
    oc = c * m
    x = torch.randn(n, c, h, w_).to(dtype)  # the data; the reference gets it exactly, in float64
    if case["relu"]:
        x.view(-1)[::5] = 0  # relu's kink: no gradient flows through an input of exactly 0
    w64 = torch.randn(oc, 1, kh, kw, dtype=f64) / (kh * kw) ** 0.5
    b64 = torch.randn(oc, dtype=f64) if case["bias"] else None
    args = (list(case["stride"]), list(case["padding"]), list(case["dilation"]), "relu" if case["relu"] else "none")
    ref_y = reference.depthwise_conv2d(x.double(), w64, b64, *args)
    go = torch.randn_like(ref_y).to(dtype)
    # PyTorch's own error at this precision: the reference on x, w64 and b64 at dtype
    ref, torch_at_dtype = reference_results(lambda x, w, b: reference.depthwise_conv2d(x, w, b, *args),
                                            [x, w64, b64], dtype, TENSOR_NAMES["depthwise_conv2d"], go)
    ho, wo = ref_y.shape[2:]
    top, _, left, _ = case["padding"]
    params = [n, c, h, w_, m, oc, kh, kw, *case["stride"], top, left, *case["dilation"], ho, wo]
    if case["several_chunks"]:
        assert emu.depthwise_grad_weight_chunks(params) > 1

    def nhwc(t):
        return _placed(t.permute(0, 2, 3, 1), case["misaligned"])

    taps = w64.reshape(oc, kh * kw).t().contiguous().to(acc)  # w_taps[(r * kw + s), oc]
    bias = None if b64 is None else b64.to(acc)
    relu = case["relu"]
    got = {
        "output (NHWC)": emu.depthwise_forward_nhwc(nhwc(x), taps, bias, params, relu).permute(0, 3, 1, 2),
        "output (NCHW)": emu.depthwise_forward_nchw(_placed(x, case["misaligned"]), taps, bias, params, relu),
        "grad_input": emu.depthwise_grad_input_nhwc(nhwc(go), taps, nhwc(x) if relu else None, params,
                                                    relu).permute(0, 3, 1, 2),
        "grad_weight": emu.depthwise_grad_weight_nhwc(nhwc(go), nhwc(x), params, relu).t().reshape(oc, 1, kh, kw),
    }
    # the NCHW input gradient: its own kernel at unit stride with M == 1, else not launched
    gi_nchw = emu.depthwise_grad_input_nchw(_placed(go, case["misaligned"]), taps,
                                            _placed(x, case["misaligned"]) if relu else None, params, relu)
    if m == 1 and case["stride"] == (1, 1) and case["dilation"] == (1, 1):
        got["grad_input (NCHW)"] = gi_nchw
    else:
        assert gi_nchw.numel() == 0

    def by_result(results):  # "output (NHWC)" is compared with the reference's "output", ...
        return None if results is None else {name: results[name.split(" (")[0]] for name in got}

    assert_matches_reference(got, by_result(ref), dtype, by_result(torch_at_dtype))
