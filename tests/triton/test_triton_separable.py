"""The fused Triton separable kernels (forward: depthwise tile in registers fed to tl.dot, or the
depthwise output materialised then the pointwise GEMM; backward: depthwise output recomputed)
against the float64 reference (depthwise, mid activation, pointwise)."""

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
    "forward": ("fused", "materialised"),
})


def _force_forward(monkeypatch, path: str) -> None:
    """The forward's path, whatever the rule says (its threshold moved past every shape, or below)."""
    from xsep.triton import separable_conv2d as S

    monkeypatch.setattr(S, "MATERIALISE_ABOVE", -1 if path == "materialised" else 1 << 30)


def _id(case) -> str:
    return "-".join([DTYPE_NAMES[case["dtype"]], case["layout"], case["mid_activation"],
                     "k{}x{}".format(*case["kernel"]), "s{}{}".format(*case["stride"]),
                     "p" + "".join(map(str, case["padding"])), "d{}{}".format(*case["dilation"]),
                     f"m{case['multiplier']}", "bias" if case["bias"] else "nobias", case["input_activation"],
                     "x".join(map(str, case["size"])), case["forward"]])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_separable(triton_device, monkeypatch, case):
    _force_forward(monkeypatch, case["forward"])
    n, c, h, w, o = case["size"]
    cm = c * case["multiplier"]
    tensors = [random(n, c, h, w), random(cm, 1, *case["kernel"]), random(o, cm, 1, 1),
               random(o) if case["bias"] else None]
    args = (case["stride"], case["padding"], case["dilation"], case["input_activation"], case["mid_activation"])
    check("separable_conv2d", tensors, args, case["dtype"], triton_device, case["layout"])


@pytest.mark.parametrize("dtype, layout, mid_activation, forward", [
    (torch.float32, "channels_last", "relu6", "fused"), (torch.bfloat16, "contiguous", "elu", "materialised"),
    (torch.float64, "sliced", "none", "fused"), (torch.float16, "channels_last", "relu", "materialised")])
def test_separable_depthwise_bias(triton_device, monkeypatch, dtype, layout, mid_activation, forward):
    # The depthwise bias, added before the mid activation, in both forward paths and both backward
    # kernels that recompute the depthwise output; its gradient from the depthwise output's.
    _force_forward(monkeypatch, forward)
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


@pytest.mark.parametrize("out_channels, taps, materialised", [
    (128, (3, 3), False), (256, (3, 3), False), (384, (3, 3), False), (385, (3, 3), True), (728, (3, 3), True),
    (2048, (3, 3), True), (2048, (1, 1), False), (640, (5, 5), True), (256, (5, 5), True)])
def test_forward_rule(triton_device, out_channels, taps, materialised):
    """The rule of the module docstring: (cdiv(O, 128) - 1) * KH*KW > 18 materialises; Xception's
    728- and 2048-wide 3x3 layers do, its 128- and 256-wide ones stay fused."""
    from xsep.triton import separable_conv2d as S

    assert S.materialises_mid(out_channels, *taps) == materialised


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_separable_wide_output_materialises(triton_device, monkeypatch, dtype):
    """400 output channels after a 3x3 depthwise: the rule itself (not a forced threshold) takes the
    materialised path, here on a shape small enough for the interpreter (channels_last, 8 aligned
    channels: the hot layout), forward and backward against the reference."""
    from xsep.triton import pointwise_conv2d as PW

    calls = []
    gemm = PW.gemm
    monkeypatch.setattr(PW, "gemm", lambda *a: calls.append(a[0].shape) or gemm(*a))
    tensors = [random(1, 8, 4, 5), random(8, 1, 3, 3), random(400, 8, 1, 1), random(400)]
    args = ((1, 1), (1, 1, 1, 1), (1, 1), "relu", "relu6")
    check("separable_conv2d", tensors, args, dtype, triton_device, "channels_last", depthwise_bias=random(8))
    assert calls == [(1, 8, 4, 5)]  # one forward, through the depthwise output [N, CM, Ho, Wo]
