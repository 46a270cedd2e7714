"""Helpers for the Triton backend's tests: run an op through the triton backend and through the
float64 reference with the same random values, and compare outputs and gradients.

Tolerances (xsep.testing): float64/float32 fixed; float16/bfloat16 twice PyTorch's own error at
that dtype (the reference run at that dtype on CPU) plus a floor, and at least one unit in the last
place for tensors of fewer than 32 elements.
"""

from __future__ import annotations

import torch
from helpers import placed
from torch._prims_common import suggest_memory_format

from xsep.backends import implementation
from xsep.ops import reference
from xsep.testing import LOW_PRECISION, TENSOR_NAMES, check_against_reference

OPS = ("depthwise_conv2d", "pointwise_conv2d", "separable_conv2d")


def triton_ops():
    return implementation("triton")


def random(*shape) -> torch.Tensor:
    """Fresh float64 values (never zeros), away from activation kinks only by chance."""
    return torch.randn(*shape, dtype=torch.float64)


def check(op: str, tensors, args, dtype: torch.dtype, device: str, layout: str = "contiguous",
          depthwise_bias: torch.Tensor | None = None) -> None:
    """Forward and every gradient of `op` on the triton backend against the float64 reference
    (xsep.testing.check_against_reference). tensors: float64 values (None for an absent bias),
    which the reference gets unrounded; the first is the input, laid out as `layout` (weights
    contiguous). `depthwise_bias`: separable_conv2d's, passed after `args` as its schema has it."""
    names = TENSOR_NAMES[op]
    if depthwise_bias is not None:
        tensors, names = [*tensors, depthwise_bias], (*names, "depthwise_bias")
    layouts = [layout] + ["contiguous"] * (len(tensors) - 1)
    inputs = [None if t is None else placed(t, dtype, lay, device) for t, lay in zip(tensors, layouts)]
    n = len(TENSOR_NAMES[op])

    def run(*leaves):
        return getattr(triton_ops(), op)(*leaves[:n], *args, *leaves[n:])

    def ref(*leaves):
        return getattr(reference, op)(*leaves[:n], *args, *leaves[n:])

    got = check_against_reference(run, ref, inputs, names, values=tensors, place_grad_output=lambda g: g.to(device),
                                  min_tolerance=_tiny_tensor_floor(dtype), context=f"{op} ({dtype}, {layout}, {args})")
    out = got["output"]
    if out.numel() > 0 and device == "cpu" and layout in ("contiguous", "channels_last"):
        assert suggest_memory_format(out) == suggest_memory_format(inputs[0])


def _tiny_tensor_floor(dtype: torch.dtype):
    """Tensors of a few elements (a weight gradient of 1 channel x 3 outputs): there a single
    rounding decides the relative error, and PyTorch's own error is as often lucky as not
    (measured: Triton/PyTorch error ratios up to 2.3 over 20 seeds, means 0.0050 vs 0.0043): at low
    precision such tensors may be off by one unit in the last place."""
    if dtype not in LOW_PRECISION:
        return None
    return lambda reference_result: torch.finfo(dtype).eps if reference_result.numel() < 32 else 0.0


def check_reproducible(op: str, tensors, args, grad_output: torch.Tensor, device: str, checked) -> None:
    """Backward of `op` on the triton backend twice (float32 on `device`, the same values): the
    gradients of the tensors at the indices `checked` are bitwise equal."""
    leaves = [None if t is None else t.to(torch.float32).to(device).requires_grad_() for t in tensors]
    grad_output = grad_output.to(torch.float32).to(device)
    runs = []
    for _ in range(2):
        for t in leaves:
            if t is not None:
                t.grad = None
        getattr(triton_ops(), op)(*leaves, *args).backward(grad_output)
        runs.append([leaves[i].grad.clone() for i in checked])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
