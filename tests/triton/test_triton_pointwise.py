"""The Triton pointwise (1x1) kernels (forward with bias in the epilogue, grad input, grad weight)
against the float64 reference."""

from __future__ import annotations

import pytest
import torch

from conftest import DTYPE_NAMES, pairwise
from triton_cases import check, random, triton_ops

CASES = pairwise({
    "dtype": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "layout": ("contiguous", "channels_last", "sliced", "transposed"),
    "bias": (True, False),
    "size": ((2, 3, 5, 7, 4), (1, 17, 3, 3, 19), (2, 1, 6, 5, 2), (1, 8, 7, 7, 33), (2, 16, 3, 5, 24)),  # N, C, H, W, O
})


def _id(case) -> str:
    return "-".join([DTYPE_NAMES[case["dtype"]], case["layout"], "bias" if case["bias"] else "nobias",
                     "x".join(map(str, case["size"]))])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_pointwise(triton_device, case):
    n, c, h, w, o = case["size"]
    tensors = [random(n, c, h, w), random(o, c, 1, 1), random(o) if case["bias"] else None]
    check("pointwise_conv2d", tensors, (), case["dtype"], triton_device, case["layout"])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_pointwise_batch_zero(triton_device, layout):
    check("pointwise_conv2d", [random(0, 3, 4, 4), random(5, 3, 1, 1), random(5)], (), torch.float32,
          triton_device, layout)


def test_pointwise_grad_weight_is_deterministic(triton_device):
    x = random(2, 8, 7, 7).to(torch.float32).to(triton_device).requires_grad_()
    w = random(16, 8, 1, 1).to(torch.float32).to(triton_device).requires_grad_()
    g = random(2, 16, 7, 7).to(torch.float32).to(triton_device)
    grads = []
    for _ in range(2):
        w.grad = None
        triton_ops().pointwise_conv2d(x, w, None).backward(g)
        grads.append(w.grad.clone())
    assert torch.equal(grads[0], grads[1])
