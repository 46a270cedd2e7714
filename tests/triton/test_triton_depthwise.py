"""The Triton depthwise kernels (forward, grad input, grad weight; bias via torch) against the
float64 reference, on CUDA tensors where a GPU is visible, else in Triton's interpreter."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPE_NAMES, pairwise
from triton_cases import check, check_reproducible, random

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

CASES = pairwise({
    "dtype": DTYPES,
    "layout": ("contiguous", "channels_last", "sliced", "transposed"),
    "kernel": ((3, 3), (1, 1), (2, 3), (5, 4)),
    "stride": ((1, 1), (2, 2), (2, 1)),
    "padding": ((1, 1, 1, 1), (1, 0, 2, 1), (0, 0, 0, 0)),
    "dilation": ((1, 1), (2, 2), (1, 2)),
    "multiplier": (1, 2),
    "bias": (True, False),
    "input_activation": ("none", "relu"),
    "size": ((2, 3, 7, 6), (1, 5, 9, 7), (2, 1, 8, 8), (1, 8, 6, 5)),  # 8 channels: aligned loads
})


def _fits(case) -> bool:
    (kh, kw), (t, b, l, r), (dh, dw) = case["kernel"], case["padding"], case["dilation"]
    _, _, h, w = case["size"]
    return h + t + b >= dh * (kh - 1) + 1 and w + l + r >= dw * (kw - 1) + 1


def _id(case) -> str:
    return "-".join([DTYPE_NAMES[case["dtype"]], case["layout"], "k{}x{}".format(*case["kernel"]),
                     "s{}{}".format(*case["stride"]), "p" + "".join(map(str, case["padding"])),
                     "d{}{}".format(*case["dilation"]), f"m{case['multiplier']}", "bias" if case["bias"] else "nobias",
                     case["input_activation"], "x".join(map(str, case["size"]))])


@pytest.mark.parametrize("case", [c for c in CASES if _fits(c)], ids=_id)
def test_depthwise(triton_device, case):
    n, c, h, w = case["size"]
    cm = c * case["multiplier"]
    tensors = [random(n, c, h, w), random(cm, 1, *case["kernel"]), random(cm) if case["bias"] else None]
    args = (case["stride"], case["padding"], case["dilation"], case["input_activation"])
    check("depthwise_conv2d", tensors, args, case["dtype"], triton_device, case["layout"])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_depthwise_batch_zero(triton_device, layout):
    tensors = [random(0, 3, 5, 5), random(6, 1, 3, 3), random(6)]
    check("depthwise_conv2d", tensors, ((1, 1), (1, 1, 1, 1), (1, 1), "relu"), torch.float32, triton_device, layout)


def test_depthwise_grad_weight_is_deterministic(triton_device):
    """Partial sums per program and a second reduction: bitwise equal across runs."""
    tensors = [random(2, 4, 7, 7), random(8, 1, 3, 3), None]
    check_reproducible("depthwise_conv2d", tensors, ((1, 1), (1, 1, 1, 1), (1, 1), "relu"), random(2, 8, 7, 7),
                       triton_device, checked=(0, 1))
