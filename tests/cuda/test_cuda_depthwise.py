"""The hand-written CUDA depthwise kernels (csrc/cuda/depthwise_*), called through the ops (on a GPU,
and on the CPU emulator: see conftest.py), against the float64 reference: forward, grad input, grad
weight."""

from __future__ import annotations

import pytest
import torch
from helpers import pairwise, placed

from xsep.ops import reference
from xsep.testing import TENSOR_NAMES, assert_matches_reference, reference_results, rel_error

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


CASES = pairwise({
    "dtype": DTYPES,
    "kernel": ((3, 3), (5, 5), (7, 7), (3, 5), (1, 1)),
    "stride": ((1, 1), (2, 2), (1, 2)),
    "dilation": ((1, 1), (2, 2)),
    "padding": ((1, 1, 1, 1), (0, 2, 1, 0), (3, 3, 3, 3)),
    "channels": (8, 16, 5, 24),
    "multiplier": (1, 2),
    "layout": ("channels_last", "contiguous", "sliced"),
    "relu": (False, True),
    "bias": (False, True),
})


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()).replace(" ", ""))
def test_matches_reference(target, case):
    # Forward, grad input and grad weight (the raw ops, and the backward op of both) over the covering design.
    dtype, (kh, kw) = case["dtype"], case["kernel"]
    n, c, h, w_ = 2, case["channels"], 13, 17
    oc = c * case["multiplier"]
    x64 = torch.randn(n, c, h, w_, dtype=torch.float64, device=target.device)
    w64 = torch.randn(oc, 1, kh, kw, dtype=torch.float64, device=target.device) / (kh * kw) ** 0.5
    b64 = torch.randn(oc, dtype=torch.float64, device=target.device) if case["bias"] else None
    args = (list(case["stride"]), list(case["padding"]), list(case["dilation"]), "relu" if case["relu"] else "none")
    go64 = torch.randn_like(reference.depthwise_conv2d(x64, w64, b64, *args))
    want, torch_at_dtype = reference_results(lambda x, w, b: reference.depthwise_conv2d(x, w, b, *args),
                                             [x64, w64, b64], dtype, TENSOR_NAMES["depthwise_conv2d"], go64)
    x = placed(x64, dtype, case["layout"])
    w, b, go = (None if t is None else t.to(dtype) for t in (w64, b64, go64))
    got = {"output": target.ops.depthwise_conv2d(x, w, b, *args),
           "grad_input": target.ops.depthwise_conv2d_grad_input(go, x, w, *args),
           "grad_weight": target.ops.depthwise_conv2d_grad_weight(go, x, w, *args)}
    assert all(t.dtype == dtype for t in got.values())
    assert_matches_reference(got, want, dtype, torch_at_dtype)
    # Both gradients in one call (what autograd runs): the same kernels, the same bits.
    grad_input, grad_weight = target.ops.depthwise_conv2d_backward(go, x, w, *args)
    assert torch.equal(grad_input, got["grad_input"]) and torch.equal(grad_weight, got["grad_weight"])
    # outputs keep the input's memory format
    if case["layout"] == "channels_last":
        assert got["output"].is_contiguous(memory_format=torch.channels_last)
        assert got["grad_input"].is_contiguous(memory_format=torch.channels_last)


def test_grad_weight_is_bitwise_reproducible(target):
    x = torch.randn(8, 64, 56, 56, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(64, 1, 3, 3, device=target.device, dtype=torch.bfloat16)
    go = torch.randn(8, 64, 56, 56, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "none")
    first = target.ops.depthwise_conv2d_grad_weight(go, x, w, *args)
    for _ in range(3):
        assert torch.equal(first, target.ops.depthwise_conv2d_grad_weight(go, x, w, *args))


def test_unaligned_channels_last_view_takes_the_scalar_path(target):
    # a channels-last view whose base is 2 bytes past a 16-byte boundary: the kernels must not use
    # 16-byte accesses there
    n, c, h, w_ = 1, 16, 9, 9
    flat = torch.randn(n * c * h * w_ + 1, device=target.device, dtype=torch.bfloat16)
    x = flat[1:].view(n, h, w_, c).permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last) and x.data_ptr() % 16 != 0
    weight = torch.randn(c, 1, 3, 3, device=target.device, dtype=torch.bfloat16)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "none")
    got = target.ops.depthwise_conv2d(x, weight, None, *args)
    want = reference.depthwise_conv2d(x.double(), weight.double(), None, *args)
    assert rel_error(got, want) < 1e-2


def test_batch_zero(target):
    x = torch.randn(0, 8, 5, 5, device=target.device).to(memory_format=torch.channels_last)
    w = torch.randn(8, 1, 3, 3, device=target.device)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "none")
    y = target.ops.depthwise_conv2d(x, w, None, *args)
    assert y.shape == (0, 8, 5, 5)
    gw = target.ops.depthwise_conv2d_grad_weight(y, x, w, *args)
    assert torch.equal(gw, torch.zeros_like(w))


def test_more_than_2_to_the_31_elements(gpu_target):
    target = gpu_target
    # 64-bit indexing: 8 x 16400 x 16400 bf16 elements (4.3 GB) in and out; the last rows are
    # compared with the reference on a slice (the convolution is local)
    n, c, h, w_ = 1, 8, 16400, 16400
    assert n * c * h * w_ > 2**31
    try:
        x = torch.randn(n, c, h, w_, device=target.device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    except torch.OutOfMemoryError:
        pytest.fail("needs ~9 GB of GPU memory")
    weight = torch.randn(c, 1, 3, 3, device=target.device, dtype=torch.bfloat16)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], "none")
    y = target.ops.depthwise_conv2d(x, weight, None, *args)
    tail = reference.depthwise_conv2d(x[:, :, -8:].double(), weight.double(), None, [1, 1], [1, 1, 1, 1], [1, 1])
    assert rel_error(y[:, :, -7:], tail[:, :, -7:]) < 1e-2  # the last 7 rows, bottom padding included
