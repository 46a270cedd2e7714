"""The CUDA fused separable kernels (csrc/cuda/separable_conv2d_kernels.cu) run on the CPU by the
emulator (tests/cuda_emu, no GPU needed), composed as the CUDA op composes them
(separable_conv2d_cuda.cpp): the fused forward, then for the backward one depthwise pass writing
act(d) (the depthwise forward kernel with the mid activation as its output activation), the
pointwise weight gradient as the pointwise op's split-K GEMM over it, and the depthwise output's
gradient from a GEMM whose epilogue takes the mid activation's derivative from act(d), which the
depthwise backward kernels take on. Every result against the float64 reference. Cases reach both forward paths (depthwise rows
resident in shared memory, and act(d) materialised for the pointwise GEMM), tensor cores and FMA units, 16-byte and
scalar depthwise loads, every mid activation, the depthwise bias (added before the mid activation),
and a pixel reduction split in more than one chunk.
Outputs start NaN-filled (bindings.cpp)."""

from __future__ import annotations

import pytest
import torch

from xsep.ops import reference
from xsep.ops.schemas import activation_code
from xsep.testing import TENSOR_NAMES, assert_matches_reference, reference_results

f32, f64, bf16, f16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
DEVICE_SMEM = 227 * 1024  # an H100's opt-in shared memory per block: the resident path when it fits


def _case(dtype, c, o, k=(3, 3), *, m=1, size=(9, 11), n=2, stride=(1, 1), dilation=(1, 1), padding=None,
          relu=False, mid="none", bias=False, dw_bias=False, resident=True, misaligned=False):
    kh, kw = k
    if padding is None:  # (top, bottom, left, right): "same" at unit stride
        padding = ((kh - 1) * dilation[0] // 2,) * 2 + ((kw - 1) * dilation[1] // 2,) * 2
    return dict(dtype=dtype, c=c, o=o, m=m, k=k, size=size, n=n, stride=stride, dilation=dilation, padding=padding,
                relu=relu, mid=mid, bias=bias, dw_bias=dw_bias, resident=resident, misaligned=misaligned)


CASES = [
    # tensor cores: 16-byte depthwise loads (c % 8 == 0), output-channel tiles past 64, both paths
    _case(bf16, 16, 70, relu=True, mid="relu", bias=True),
    _case(bf16, 16, 70, mid="relu6", dw_bias=True),
    _case(f16, 40, 24, (5, 5), mid="elu", dw_bias=True, resident=False),
    # elu's derivative from act(d) + 1 in bfloat16 (8 bits), through both signs of d
    _case(bf16, 16, 24, mid="elu", dw_bias=True),
    _case(bf16, 8, 9, (3, 5), stride=(2, 2), padding=(0, 2, 1, 0), mid="relu6", resident=False),
    _case(bf16, 24, 40, n=1, mid="none", bias=True, resident=False),
    # channels for 16-byte loads, but the input 2 bytes past a 16-byte boundary: scalar loads
    _case(bf16, 16, 20, mid="relu", misaligned=True),
    # scalar loads: odd channels, depth multiplier 2, dilation
    _case(f16, 5, 7, m=2, dilation=(2, 2), relu=True, mid="relu6", bias=True, dw_bias=True),
    # FMA units (float32, float64): both paths, vectors (float 4, double 2) and scalars
    _case(f32, 8, 66, (7, 7), relu=True, mid="elu", bias=True),
    _case(f32, 3, 5, m=2, stride=(2, 1), mid="relu", dw_bias=True, resident=False),
    _case(f64, 6, 17, (1, 3), padding=(0, 0, 1, 2), mid="none", bias=True, resident=False),
    _case(f64, 7, 4, (5, 5), stride=(2, 2), relu=True, mid="relu", dw_bias=True),
    # the GEMM epilogues' rows: odd widths (the mid gradient's C = 7, the output's O = 9) element by
    # element, and O = 68 (float32) as 4-wide vectors
    _case(bf16, 7, 9, mid="relu", bias=True),
    _case(f32, 4, 68, mid="relu6", bias=True, dw_bias=True),
    # more than 4096 output pixels: the pointwise weight gradient's reduction in two chunks
    _case(bf16, 8, 8, size=(48, 48), relu=True, mid="relu"),
]


def _id(case):
    kh, kw = case["k"]
    parts = [str(case["dtype"]).removeprefix("torch."), f"c{case['c']}m{case['m']}o{case['o']}", f"k{kh}x{kw}",
             "s{}{}".format(*case["stride"]), "d{}{}".format(*case["dilation"]), f"mid-{case['mid']}",
             "resident" if case["resident"] else "materialised"]
    parts += [flag for flag in ("relu", "bias", "dw_bias", "misaligned") if case[flag]]
    return "-".join(parts)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_reference(emu, case):
    dtype, c, m, o, (kh, kw) = case["dtype"], case["c"], case["m"], case["o"], case["k"]
    acc = f64 if dtype == f64 else f32
    n, (h, w_), oc = case["n"], case["size"], c * m
    relu, mid = case["relu"], case["mid"]
    scale = 4 if mid == "relu6" else 1  # so that relu6's upper kink is crossed too
    x = (scale * torch.randn(n, c, h, w_)).to(dtype)  # the data; the reference gets it exactly, in float64
    if relu:
        x.view(-1)[::5] = 0  # relu's kink: no gradient flows through an input of exactly 0
    dw64 = (torch.randn(oc, 1, kh, kw, dtype=f64) / (kh * kw) ** 0.5).to(dtype).double()
    pw64 = (torch.randn(o, oc, 1, 1, dtype=f64) / oc**0.5).to(dtype).double()
    b64 = torch.randn(o, dtype=f64) if case["bias"] else None
    dwb64 = (scale * torch.randn(oc, dtype=f64)).to(dtype).double() if case["dw_bias"] else None
    args = (list(case["stride"]), list(case["padding"]), list(case["dilation"]), "relu" if relu else "none", mid)

    def ref(x, dw, pw, b, dwb):
        return reference.separable_conv2d(x, dw, pw, b, *args, depthwise_bias=dwb)

    ref_y = ref(x.double(), dw64, pw64, b64, dwb64)
    go = torch.randn_like(ref_y).to(dtype)
    # PyTorch's own error at this precision: the reference on x and the weights at dtype
    want, torch_at_dtype = reference_results(ref, [x, dw64, pw64, b64, dwb64], dtype,
                                             (*TENSOR_NAMES["separable_conv2d"], "depthwise_bias"), go)
    ho, wo = ref_y.shape[2:]
    top, _, left, _ = case["padding"]
    params = [n, c, h, w_, m, oc, kh, kw, *case["stride"], top, left, *case["dilation"], ho, wo]
    if n * ho * wo > 4096:
        assert emu.gemm_k_splits(o, oc, n * ho * wo) > 1

    def nhwc(t):
        return t.permute(0, 2, 3, 1).contiguous()

    def input_nhwc(t):  # x as the kernels get it, one element past a 16-byte boundary if asked
        if not case["misaligned"]:
            return nhwc(t)
        flat = torch.empty(t.numel() + 1, dtype=t.dtype)
        view = flat[1:].view(n, h, w_, c)
        view.copy_(t.permute(0, 2, 3, 1))
        assert view.data_ptr() % 16 != 0
        return view

    def nchw(t):
        return t.permute(0, 3, 1, 2)

    taps = dw64.reshape(oc, kh * kw).t().contiguous().to(acc)  # w_taps[(r * kw + s), oc]
    w_pw = pw64.reshape(o, oc).to(dtype).contiguous()
    bias = None if b64 is None else b64.to(acc)
    dw_bias = None if dwb64 is None else dwb64.to(acc)
    smem = DEVICE_SMEM if case["resident"] else 0
    code = activation_code(mid)
    y = emu.separable_forward_nhwc(input_nhwc(x), taps, dw_bias, w_pw, bias, params, relu, code, smem)
    act_d = emu.depthwise_forward_act_nhwc(input_nhwc(x), taps, dw_bias, params, relu, code)
    grad_pw = emu.pointwise_gemm_split_k(nhwc(go).reshape(-1, o).t(), act_d.reshape(-1, oc))
    grad_mid = emu.separable_grad_mid_nhwc(nhwc(go), None if mid == "none" else act_d, w_pw, params, relu, code)
    grad_input = emu.depthwise_grad_input_nhwc(grad_mid, taps, nhwc(x), params, relu)
    grad_dw = emu.depthwise_grad_weight_nhwc(grad_mid, nhwc(x), params, relu)
    got = {"output": nchw(y), "grad_input": nchw(grad_input), "grad_depthwise_weight": grad_dw.t().reshape(oc, 1, kh, kw),
           "grad_pointwise_weight": grad_pw.reshape(o, oc, 1, 1)}
    if dw_bias is not None:  # the CUDA op sums grad_mid over the pixels for it (separable_conv2d_cuda.cpp)
        got["grad_depthwise_bias"] = grad_mid.to(acc).sum((0, 1, 2)).to(dtype)
    assert_matches_reference(got, want, dtype, torch_at_dtype)
