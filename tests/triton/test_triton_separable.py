"""The fused Triton separable kernels (forward: depthwise tile in registers fed to tl.dot; backward:
depthwise output recomputed) against the float64 reference (depthwise, mid activation, pointwise)."""

from __future__ import annotations

import pytest
import torch
from helpers import DTYPE_NAMES, pairwise
from triton_cases import check, check_reproducible, random

CASES = pairwise({
    "dtype": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "layout": ("contiguous", "channels_last", "sliced", "transposed"),
    "mid_activation": ("none", "relu", "relu6", "elu"),
    "kernel": ((3, 3), (1, 1), (2, 3)),
    "stride": ((1, 1), (2, 2), (1, 2)),
    "padding": ((1, 1, 1, 1), (1, 0, 2, 1), (0, 0, 0, 0)),
    "dilation": ((1, 1), (2, 2)),
    "multiplier": (1, 2),
    "bias": (True, False),
    "input_activation": ("none", "relu"),
    "size": ((2, 3, 7, 6, 5), (1, 5, 9, 7, 17), (2, 1, 6, 6, 3), (1, 8, 5, 6, 16)),  # N, C, H, W, O
})


def _id(case) -> str:
    return "-".join([DTYPE_NAMES[case["dtype"]], case["layout"], case["mid_activation"],
                     "k{}x{}".format(*case["kernel"]), "s{}{}".format(*case["stride"]),
                     "p" + "".join(map(str, case["padding"])), "d{}{}".format(*case["dilation"]),
                     f"m{case['multiplier']}", "bias" if case["bias"] else "nobias", case["input_activation"],
                     "x".join(map(str, case["size"]))])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_separable(triton_device, case):
    n, c, h, w, o = case["size"]
    cm = c * case["multiplier"]
    tensors = [random(n, c, h, w), random(cm, 1, *case["kernel"]), random(o, cm, 1, 1),
               random(o) if case["bias"] else None]
    args = (case["stride"], case["padding"], case["dilation"], case["input_activation"], case["mid_activation"])
    check("separable_conv2d", tensors, args, case["dtype"], triton_device, case["layout"])


@pytest.mark.parametrize("dtype, layout, mid_activation", [
    (torch.float32, "channels_last", "relu6"), (torch.bfloat16, "contiguous", "elu"),
    (torch.float64, "sliced", "none"), (torch.float16, "channels_last", "relu")])
def test_separable_depthwise_bias(triton_device, dtype, layout, mid_activation):
    # The depthwise bias, added before the mid activation, in the forward and both backward kernels
    # that recompute the depthwise output; its gradient from the depthwise output's.
    tensors = [random(2, 3, 7, 6), random(6, 1, 3, 3), random(5, 6, 1, 1), random(5)]
    args = ((2, 1), (1, 0, 2, 1), (1, 1), "relu", mid_activation)
    check("separable_conv2d", tensors, args, dtype, triton_device, layout, depthwise_bias=3 * random(6))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_separable_batch_zero(triton_device, layout):
    tensors = [random(0, 3, 5, 5), random(6, 1, 3, 3), random(4, 6, 1, 1), random(4)]
    check("separable_conv2d", tensors, ((1, 1), (1, 1, 1, 1), (1, 1), "relu", "relu6"), torch.float32,
          triton_device, layout)


def test_separable_grads_are_deterministic(triton_device):
    """Both weight gradients (per-program partials, then one reduction) are bitwise reproducible."""
    tensors = [random(2, 4, 7, 7), random(8, 1, 3, 3), random(6, 8, 1, 1), None]
    check_reproducible("separable_conv2d", tensors, ((1, 1), (1, 1, 1, 1), (1, 1), "none", "elu"), random(2, 6, 7, 7),
                       triton_device, checked=(0, 1, 2))
