"""The hand-written CUDA fused separable kernels (csrc/cuda/separable_*: GEMMs whose depthwise operand
is computed on chip), called through the ops (on a GPU, and on the CPU emulator: see conftest.py), against the
float64 reference: forward and the fused backward."""

from __future__ import annotations

import pytest
import torch
from helpers import pairwise, placed

from xsep.ops import reference
from xsep.testing import TENSOR_NAMES, assert_matches_reference, reference_results


def _check(target, x64, dw64, pw64, b64, args, dtype, layout, dwb64=None):
    """The fused forward and backward ops on the input laid out as `layout` against the reference
    (with the depthwise bias `dwb64` when given)."""
    def ref(x, dw, pw, b, dwb):
        return reference.separable_conv2d(x, dw, pw, b, *args, depthwise_bias=dwb)

    go64 = torch.randn_like(ref(x64, dw64, pw64, b64, dwb64))
    want, torch_at_dtype = reference_results(ref, [x64, dw64, pw64, b64, dwb64], dtype,
                                             (*TENSOR_NAMES["separable_conv2d"], "depthwise_bias"), go64)
    x = placed(x64, dtype, layout)
    dw, pw, b, dwb, go = (None if t is None else t.to(dtype) for t in (dw64, pw64, b64, dwb64, go64))
    y = target.ops.separable_conv2d(x, dw, pw, b, *args, dwb)
    grads = target.ops.separable_conv2d_backward(go, x, dw, pw, *args, dwb)
    names = ("output", "grad_input", "grad_depthwise_weight", "grad_pointwise_weight", "grad_depthwise_bias")
    got = dict(zip(names, (y, *grads)))
    if dwb is None:  # nothing to differentiate: an empty tensor
        assert grads[3].shape == (0,)
        del got["grad_depthwise_bias"]
    assert_matches_reference(got, want, dtype, torch_at_dtype)
    assert all(g.dtype == dtype for g in got.values())
    return tuple(got.values())


CASES = pairwise({
    "dtype": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "kernel": ((3, 3), (5, 5), (7, 7), (3, 5)),
    "stride": ((1, 1), (2, 2)),
    "dilation": ((1, 1), (2, 2)),
    "padding": ((1, 1, 1, 1), (0, 2, 1, 0)),
    # (in, multiplier, out): vector loads (in % 8 == 0, M == 1), scalar ones, output tile edges
    "channels": ((16, 1, 24), (5, 1, 7), (8, 2, 70), (40, 1, 130)),
    "layout": ("channels_last", "contiguous", "sliced"),
    "input_activation": ("none", "relu"),
    "mid_activation": ("none", "relu", "relu6", "elu"),
    "bias": (False, True),
    "depthwise_bias": (False, True),
})


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()).replace(" ", ""))
def test_matches_reference(target, case):
    (kh, kw), (c, m, o) = case["kernel"], case["channels"]
    scale = 4 if case["mid_activation"] == "relu6" else 1  # so that relu6's upper kink is crossed too
    x64 = scale * torch.randn(2, c, 13, 17, dtype=torch.float64, device=target.device)
    dw64 = torch.randn(c * m, 1, kh, kw, dtype=torch.float64, device=target.device) / (kh * kw) ** 0.5
    pw64 = torch.randn(o, c * m, 1, 1, dtype=torch.float64, device=target.device) / (c * m) ** 0.5
    b64 = torch.randn(o, dtype=torch.float64, device=target.device) if case["bias"] else None
    dwb64 = scale * torch.randn(c * m, dtype=torch.float64, device=target.device) if case["depthwise_bias"] else None
    args = (list(case["stride"]), list(case["padding"]), list(case["dilation"]),
            case["input_activation"], case["mid_activation"])
    y, gi, *_ = _check(target, x64, dw64, pw64, b64, args, case["dtype"], case["layout"], dwb64)
    if case["layout"] == "channels_last":  # outputs keep the input's memory format
        assert y.is_contiguous(memory_format=torch.channels_last)
        assert gi.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32, torch.float64))
def test_wide_layers_materialise_the_depthwise_output(target, dtype):
    # 2048 depthwise channels do not fit a block's shared memory: the forward writes act(d) to a
    # workspace for the pointwise GEMM instead of keeping it resident
    x64 = torch.randn(1, 2048, 5, 6, dtype=torch.float64, device=target.device)
    dw64 = torch.randn(2048, 1, 3, 3, dtype=torch.float64, device=target.device) / 3
    pw64 = torch.randn(72, 2048, 1, 1, dtype=torch.float64, device=target.device) / 2048**0.5
    _check(target, x64, dw64, pw64, None, ([1, 1], [1, 1, 1, 1], [1, 1], "relu", "relu"), dtype, "channels_last")


def test_xception_middle_layer_shape(target):
    # 728 channels (not a multiple of 64), 19 x 19, bf16: the real layer at a small batch (1 image
    # on the emulator)
    x64 = torch.randn(2 if target.on_gpu else 1, 728, 19, 19, dtype=torch.float64, device=target.device)
    dw64 = torch.randn(728, 1, 3, 3, dtype=torch.float64, device=target.device) / 3
    pw64 = torch.randn(728, 728, 1, 1, dtype=torch.float64, device=target.device) / 728**0.5
    _check(target, x64, dw64, pw64, None, ([1, 1], [1, 1, 1, 1], [1, 1], "relu", "none"), torch.bfloat16, "channels_last")


def test_backward_is_bitwise_reproducible(target):
    # more than 4096 pixels: the pointwise weight gradient's reduction is split
    x = torch.randn(8, 64, 28, 28, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    dw = torch.randn(64, 1, 3, 3, device=target.device, dtype=torch.bfloat16)
    pw = torch.randn(96, 64, 1, 1, device=target.device, dtype=torch.bfloat16)
    go = torch.randn(8, 96, 28, 28, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "relu", "relu")
    first = target.ops.separable_conv2d_backward(go, x, dw, pw, *args)
    for _ in range(3):
        again = target.ops.separable_conv2d_backward(go, x, dw, pw, *args)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_batch_zero(target):
    x = torch.randn(0, 8, 5, 5, device=target.device).to(memory_format=torch.channels_last)
    dw, pw = torch.randn(8, 1, 3, 3, device=target.device), torch.randn(4, 8, 1, 1, device=target.device)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "none", "none")
    y = target.ops.separable_conv2d(x, dw, pw, None, *args)
    assert y.shape == (0, 4, 5, 5)
    gi, gdw, gpw, gdb = target.ops.separable_conv2d_backward(y, x, dw, pw, *args)
    assert gi.shape == x.shape and torch.equal(gdw, torch.zeros_like(dw)) and torch.equal(gpw, torch.zeros_like(pw))
    assert gdb.shape == (0,)  # no depthwise bias


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_past_the_resident_tile_with_biases(target, dtype):
    # 1024 depthwise channels: 128 pixels' rows (264 KB) do not fit a block's shared memory, so act(d)
    # goes through the workspace, here with both biases and relu6 (its upper kink crossed)
    x64 = 4 * torch.randn(1, 1024, 9, 10, dtype=torch.float64, device=target.device)
    dw64 = torch.randn(1024, 1, 3, 3, dtype=torch.float64, device=target.device) / 3
    pw64 = torch.randn(136, 1024, 1, 1, dtype=torch.float64, device=target.device) / 1024**0.5
    b64 = torch.randn(136, dtype=torch.float64, device=target.device)
    dwb64 = torch.randn(1024, dtype=torch.float64, device=target.device)
    _check(target, x64, dw64, pw64, b64, ([1, 1], [1, 1, 1, 1], [1, 1], "relu", "relu6"), dtype, "channels_last",
           dwb64)
