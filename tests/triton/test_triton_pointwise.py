"""The Triton pointwise (1x1) kernels (forward with bias in the epilogue, grad input, grad weight)
against the float64 reference."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPE_NAMES, pairwise
from triton_cases import check, check_reproducible, random

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
    # The weight gradient reduces over every pixel: per-program partials, then one reduction.
    tensors = [random(2, 8, 7, 7), random(16, 8, 1, 1), None]
    check_reproducible("pointwise_conv2d", tensors, (), random(2, 16, 7, 7), triton_device, checked=(1,))
