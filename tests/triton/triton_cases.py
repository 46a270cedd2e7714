"""Helpers for the Triton backend's tests: run an op through the triton backend and through the
float64 reference with the same random values, and compare outputs and gradients.

Tolerances (tests/conftest.py): float64/float32 fixed; float16/bfloat16 twice PyTorch's own error at
that dtype (the reference run at that dtype on CPU) plus a floor.
"""

from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from conftest import FIXED_TOLERANCE, LOW_PRECISION, low_precision_tolerance, poisoned, rel_error
from xsep.ops import implementation, reference

OPS = ("depthwise_conv2d", "pointwise_conv2d", "separable_conv2d")


def triton_ops():
    return implementation("triton")


def random(*shape) -> torch.Tensor:
    """Fresh float64 values (never zeros), away from activation kinks only by chance."""
    return torch.randn(*shape, dtype=torch.float64)


def placed(values: torch.Tensor, dtype: torch.dtype, device: str, layout: str) -> torch.Tensor:
    """`values` at `dtype` on `device` with the given layout (conftest.poisoned); 'sliced' keeps its
    NaN-surrounded strided view on CPU only (a copy to the GPU makes it dense)."""
    t = values.detach().to(dtype, copy=True)
    if t.dim() != 4 and layout in ("channels_last", "transposed"):
        layout = "contiguous"
    t = poisoned(t, layout)
    return t.to(device) if device != "cpu" else t


def _run(fn, tensors, args, grad_out_values, dtype, device, layouts):
    """fn(*tensors, *args) with the tensors placed at dtype/device/layout, then backward with
    grad_out_values: (output, [grads], inputs as passed)."""
    leaves = []
    for t, layout in zip(tensors, layouts):
        if t is None:
            leaves.append(None)
            continue
        leaf = placed(t, dtype, device, layout).requires_grad_()
        leaves.append(leaf)
    before = [None if t is None else t.detach().clone() for t in leaves]
    out = fn(*leaves, *args)
    out.backward(grad_out_values.to(dtype).to(device))
    # The inputs must be untouched (input_activation is applied as the input is loaded).
    for t, b in zip(leaves, before):
        if t is not None:
            assert torch.equal(t.detach().nan_to_num(7.0), b.nan_to_num(7.0)), "an input tensor was modified"
    return out, [None if t is None else t.grad for t in leaves], leaves


def check(op: str, tensors, args, dtype: torch.dtype, device: str, layout: str = "contiguous") -> None:
    """Forward and every gradient of `op` on the triton backend against the float64 reference.
    tensors: float64 values (None for an absent bias); the first is the input, laid out as `layout`
    (weights contiguous)."""
    layouts = [layout] + ["contiguous"] * (len(tensors) - 1)
    ref_fn = getattr(reference, op)
    ref_out = ref_fn(*[None if t is None else t.clone().requires_grad_() for t in tensors], *args)
    grad_out = random(*ref_out.shape)

    ref_out, ref_grads, _ = _run(ref_fn, tensors, args, grad_out, torch.float64, "cpu", ["contiguous"] * len(tensors))
    out, grads, leaves = _run(getattr(triton_ops(), op), tensors, args, grad_out, dtype, device, layouts)

    assert out.dtype == dtype and out.device.type == device
    assert out.shape == ref_out.shape
    if out.numel() > 0 and device == "cpu" and layout in ("contiguous", "channels_last"):
        assert suggest_memory_format(out) == suggest_memory_format(leaves[0])
    if dtype in LOW_PRECISION:
        low_out, low_grads, _ = _run(ref_fn, tensors, args, grad_out, dtype, "cpu", ["contiguous"] * len(tensors))
        # Tensors of a few elements (a weight gradient of 1 channel x 3 outputs): there a single
        # rounding decides the relative error, and PyTorch's own error is as often lucky as not
        # (measured: Triton/PyTorch error ratios up to 2.3 over 20 seeds, means 0.0050 vs 0.0043):
        # such tensors may be off by one unit in the last place.
        tols = [max(low_precision_tolerance(dtype, rel_error(a, b)), torch.finfo(dtype).eps if b.numel() < 32 else 0)
                for a, b in zip([low_out] + low_grads, [ref_out] + ref_grads) if a is not None]
    else:
        tols = [FIXED_TOLERANCE[dtype]] * (1 + sum(t is not None for t in tensors))
    names = ["output"] + [f"grad {i}" for i, t in enumerate(tensors) if t is not None]
    pairs = [(a, b) for a, b in zip([out] + grads, [ref_out] + ref_grads) if b is not None]
    for name, (a, b), tol in zip(names, pairs, tols):
        assert a is not None, f"{name} missing"
        err = rel_error(a.cpu(), b)
        assert err <= tol, f"{op} {name}: relative error {err:.3g} > {tol:.3g} ({dtype}, {layout}, {args})"
