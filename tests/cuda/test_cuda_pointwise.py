"""The hand-written CUDA pointwise kernels (csrc/cuda/pointwise_*: a strided GEMM, tensor cores for
16-bit data), called through torch.ops.xsep on CUDA tensors, against the float64 reference:
forward, grad input, grad weight. Needs a GPU (the `cuda` marker)."""

from __future__ import annotations

import pytest
import torch

from conftest import FIXED_TOLERANCE, LOW_PRECISION, low_precision_tolerance, pairwise, poisoned, rel_error, require_native
from xsep.ops import reference

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def _native_cuda():
    require_native()
    if not torch._C._dispatch_has_kernel_for_dispatch_key("xsep::pointwise_conv2d", "CUDA"):
        pytest.fail("the library was built without CUDA pointwise kernels")


def _reference(x, w, b, go):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    y = reference.pointwise_conv2d(x, w, b)
    gi, gw = torch.autograd.grad(y, (x, w), go)
    return y.detach(), gi, gw


CASES = pairwise({
    "dtype": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    # (batch, in, out, size): tile edges (130 > 128 rows per block), odd channel counts, and more
    # than 4096 pixels so the weight gradient's reduction is split
    "shape": ((2, 5, 7, 9), (2, 8, 16, 13), (1, 130, 70, 12), (2, 64, 96, 48), (3, 33, 1, 5)),
    "layout": ("channels_last", "contiguous", "sliced"),
    "bias": (False, True),
})


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()).replace(" ", ""))
def test_matches_reference(case):
    dtype, (n, c, o, s) = case["dtype"], case["shape"]
    x64 = torch.randn(n, c, s, s, dtype=torch.float64, device="cuda")
    w64 = torch.randn(o, c, 1, 1, dtype=torch.float64, device="cuda") / c**0.5
    b64 = torch.randn(o, dtype=torch.float64, device="cuda") if case["bias"] else None
    go64 = torch.randn(n, o, s, s, dtype=torch.float64, device="cuda")
    ref = _reference(x64, w64, b64, go64)
    x = poisoned(x64.to(dtype).cpu(), "sliced").to("cuda") if case["layout"] == "sliced" else \
        poisoned(x64.to(dtype), case["layout"])
    w, b, go = w64.to(dtype), None if b64 is None else b64.to(dtype), go64.to(dtype)
    got = (torch.ops.xsep.pointwise_conv2d(x, w, b),
           torch.ops.xsep.pointwise_conv2d_grad_input(go, x, w),
           torch.ops.xsep.pointwise_conv2d_grad_weight(go, x, w))
    if dtype in LOW_PRECISION:
        baseline = _reference(x.to(dtype), w, b, go)
    for i, (name, a, r) in enumerate(zip(("output", "grad_input", "grad_weight"), got, ref)):
        assert a.shape == r.shape and a.dtype == dtype, name
        tol = FIXED_TOLERANCE[dtype] if dtype not in LOW_PRECISION else \
            low_precision_tolerance(dtype, rel_error(baseline[i], r))
        err = rel_error(a, r)
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g}"
    if case["layout"] == "channels_last":
        assert got[0].is_contiguous(memory_format=torch.channels_last)


def test_grad_weight_is_bitwise_reproducible():
    x = torch.randn(16, 128, 40, 40, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.randn(256, 128, 1, 1, device="cuda", dtype=torch.bfloat16)
    go = torch.randn(16, 256, 40, 40, device="cuda", dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    first = torch.ops.xsep.pointwise_conv2d_grad_weight(go, x, w)
    for _ in range(3):
        assert torch.equal(first, torch.ops.xsep.pointwise_conv2d_grad_weight(go, x, w))


def test_batch_zero():
    x = torch.randn(0, 8, 5, 5, device="cuda")
    w = torch.randn(4, 8, 1, 1, device="cuda")
    y = torch.ops.xsep.pointwise_conv2d(x, w, None)
    assert y.shape == (0, 4, 5, 5)
    assert torch.equal(torch.ops.xsep.pointwise_conv2d_grad_weight(y, x, w), torch.zeros_like(w))
