"""The hand-written CUDA pointwise kernels (csrc/cuda/pointwise_*: a strided GEMM, tensor cores for
16-bit data), called through the ops (on a GPU, and on the CPU emulator: see conftest.py), against
the float64 reference: forward, grad input, grad weight."""

from __future__ import annotations

import pytest
import torch
from helpers import pairwise, placed

from xsep.ops import reference
from xsep.testing import TENSOR_NAMES, assert_matches_reference, reference_results

CASES = pairwise({
    "dtype": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    # (batch, in, out, size): tile edges (130 > 128 rows per block), odd channel counts, and more
    # than 4096 pixels so the weight gradient's reduction is split
    "shape": ((2, 5, 7, 9), (2, 8, 16, 13), (1, 130, 70, 12), (2, 64, 96, 48), (3, 33, 1, 5)),
    "layout": ("channels_last", "contiguous", "sliced"),
    "bias": (False, True),
})


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()).replace(" ", ""))
def test_matches_reference(target, case):
    # Forward, grad input and grad weight (the raw ops) over the covering design.
    dtype, (n, c, o, s) = case["dtype"], case["shape"]
    x64 = torch.randn(n, c, s, s, dtype=torch.float64, device=target.device)
    w64 = torch.randn(o, c, 1, 1, dtype=torch.float64, device=target.device) / c**0.5
    b64 = torch.randn(o, dtype=torch.float64, device=target.device) if case["bias"] else None
    go64 = torch.randn(n, o, s, s, dtype=torch.float64, device=target.device)
    want, torch_at_dtype = reference_results(reference.pointwise_conv2d, [x64, w64, b64], dtype,
                                             TENSOR_NAMES["pointwise_conv2d"], go64)
    x = placed(x64, dtype, case["layout"])
    w, b, go = (None if t is None else t.to(dtype) for t in (w64, b64, go64))
    got = {"output": target.ops.pointwise_conv2d(x, w, b),
           "grad_input": target.ops.pointwise_conv2d_grad_input(go, x, w),
           "grad_weight": target.ops.pointwise_conv2d_grad_weight(go, x, w)}
    assert all(t.dtype == dtype for t in got.values())
    assert_matches_reference(got, want, dtype, torch_at_dtype)
    if case["layout"] == "channels_last":
        assert got["output"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(1, 72, 40, 9), (2, 136, 16, 7), (1, 24, 264, 5)], ids=str)
def test_k_major_operands(target, dtype, shape):
    # Tensor cores: the operands whose k index is the outer one (the input gradient's weight, both
    # operands of the weight gradient) staged k-major by 16-byte copies, with rows past a tile edge
    # (136 > 128 input channels: the input gradient's B and the weight gradient's; 264 > 256 output
    # channels: the weight gradient's A) and pixels past a K step (81, 98, 25).
    n, c, o, s = shape
    x64 = torch.randn(n, c, s, s, dtype=torch.float64, device=target.device)
    w64 = torch.randn(o, c, 1, 1, dtype=torch.float64, device=target.device) / c**0.5
    go64 = torch.randn(n, o, s, s, dtype=torch.float64, device=target.device)
    want, torch_at_dtype = reference_results(reference.pointwise_conv2d, [x64, w64, None], dtype,
                                             TENSOR_NAMES["pointwise_conv2d"], go64)
    x = placed(x64, dtype, "channels_last")
    w, go = w64.to(dtype), placed(go64, dtype, "channels_last")
    got = {"grad_input": target.ops.pointwise_conv2d_grad_input(go, x, w),
           "grad_weight": target.ops.pointwise_conv2d_grad_weight(go, x, w)}
    assert_matches_reference(got, want, dtype, torch_at_dtype)


def test_grad_weight_is_bitwise_reproducible(target):
    # more than 4096 pixels, so that the reduction is split (the emulator's: 4608, a smaller layer)
    n, c, o, s = (16, 128, 256, 40) if target.on_gpu else (2, 64, 128, 48)
    x = torch.randn(n, c, s, s, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(o, c, 1, 1, device=target.device, dtype=torch.bfloat16)
    go = torch.randn(n, o, s, s, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    first = target.ops.pointwise_conv2d_grad_weight(go, x, w)
    for _ in range(3):
        assert torch.equal(first, target.ops.pointwise_conv2d_grad_weight(go, x, w))


def test_batch_zero(target):
    x = torch.randn(0, 8, 5, 5, device=target.device)
    w = torch.randn(4, 8, 1, 1, device=target.device)
    y = target.ops.pointwise_conv2d(x, w, None)
    assert y.shape == (0, 4, 5, 5)
    assert torch.equal(target.ops.pointwise_conv2d_grad_weight(y, x, w), torch.zeros_like(w))
