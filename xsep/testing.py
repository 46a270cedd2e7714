"""Checking an implementation of an xsep op against the float64 reference (like `torch.testing`).

The project's one rule for "this backend computes the right thing": run it on fresh random inputs
(never zeros), run the reference (`xsep.ops.reference`, plain PyTorch) on the same values in
float64, and compare every result (output and each gradient) by relative norm error (`rel_error`).
The allowed error (`tolerance`):

- float64 and float32: fixed, `FIXED_TOLERANCE` (1e-12 and 1e-5: a few hundred ulps of the
  accumulation over the small reductions the tests use);
- bfloat16 and float16: twice PyTorch's own error at that dtype plus a floor of an eighth of the
  dtype's epsilon (`LOW_PRECISION_FLOOR`, so that a lucky, near-exact PyTorch result on a tiny
  tensor does not demand the impossible). PyTorch's own error is the reference itself run at that
  dtype on the same values (the `torch` backend), measured against the float64 reference.

Not-a-number: `rel_error` is `inf` when the result has a NaN or an infinity (and raises when the
reference has one: nothing can be judged against it). `inf` fails every `err <= tol`, sorts as the
worst error in a `max()` (a NaN would not: comparisons with NaN are all false, so `max` may skip
it), and prints as what it is. A NaN output therefore always fails. The one thing `inf` does not
do is fail `err > x`: a test asserting that two results *differ* must also assert that the error
is finite.

Which function to call:

- A new backend or op reachable through autograd (a `torch.ops` op, an `xsep.functional`
  function, a backend's op table): `check_against_reference(run, reference, inputs, names)`. It
  draws the output gradient, runs forward and backward on both sides and at low precision
  measures PyTorch's own error, then asserts every result within tolerance and reports every
  failure at once. Pass float64 `values` too when `inputs` were rounded from them (the reference
  then sees the unrounded values, as the backend's user would have them).
- Kernels called one by one (raw forward and backward ops, an emulator's launchers):
  compute your results into a dict, get the expected ones and PyTorch's own with
  `reference_results(reference, inputs, dtype, names, grad_output)`, and compare with
  `assert_matches_reference(got, want, dtype, torch_at_dtype)`.
- Anything else (a benchmark's summary, a one-off comparison): `rel_error` and `tolerance`.

Only `torch` is imported, so the benchmarks (`xsep.bench.verify`) use the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["FIXED_TOLERANCE", "LOW_PRECISION", "LOW_PRECISION_FLOOR", "TENSOR_NAMES", "rel_error", "tolerance",
           "results", "reference_results", "assert_matches_reference", "check_against_reference"]

FIXED_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
LOW_PRECISION = (torch.bfloat16, torch.float16)
LOW_PRECISION_FLOOR = {dt: torch.finfo(dt).eps / 8 for dt in LOW_PRECISION}

# The tensor arguments of each op, in order: the `names` to pass for an op's inputs (results are
# then "output", "grad_input", "grad_weight", ...).
TENSOR_NAMES = {
    "depthwise_conv2d": ("input", "weight", "bias"),
    "pointwise_conv2d": ("input", "weight", "bias"),
    "separable_conv2d": ("input", "depthwise_weight", "pointwise_weight", "bias"),
}

Tensors = Sequence["torch.Tensor | None"]


def rel_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """||actual - reference|| / ||reference|| in float64, on the reference's device (the absolute
    error when the reference is all zeros). `inf` when `actual` has a NaN or an infinity; a
    ValueError when `reference` has one."""
    if actual.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(actual.shape)} vs {tuple(reference.shape)}")
    r = reference.detach().to(torch.float64)
    a = actual.detach().to(device=r.device, dtype=torch.float64)
    if not torch.isfinite(r).all():
        raise ValueError("the reference has a NaN or an infinity: nothing can be compared with it")
    if not torch.isfinite(a).all():
        return math.inf
    diff = torch.linalg.vector_norm(a - r).item()
    ref = torch.linalg.vector_norm(r).item()
    return diff / ref if ref > 0 else diff


def tolerance(dtype: torch.dtype, torch_error: float | None = None) -> float:
    """The largest relative error allowed at `dtype`: FIXED_TOLERANCE for float32/float64; for
    bfloat16/float16 `2 * torch_error + LOW_PRECISION_FLOOR[dtype]`, where `torch_error` is
    PyTorch's own error (its result at `dtype` against the float64 reference), which must then be
    given and finite."""
    if dtype in FIXED_TOLERANCE:
        return FIXED_TOLERANCE[dtype]
    if dtype not in LOW_PRECISION:
        raise ValueError(f"no tolerance rule for {dtype}")
    if torch_error is None or not math.isfinite(torch_error):
        raise ValueError(f"the tolerance at {dtype} needs PyTorch's own (finite) error, got {torch_error}")
    return 2 * torch_error + LOW_PRECISION_FLOOR[dtype]


def results(fn: Callable[..., torch.Tensor], inputs: Tensors, names: Sequence[str],
            grad_output: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """{"output": fn(*inputs)} and, when `grad_output` is given, {"grad_<name>": the gradient of
    <output, grad_output> with respect to each input that is not None}. The inputs are used as
    given (detached leaves sharing their storage and strides)."""
    if len(names) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(names)} names")
    leaves = [None if t is None else t.detach().requires_grad_(grad_output is not None) for t in inputs]
    with torch.set_grad_enabled(grad_output is not None):
        out = fn(*leaves)
    return _with_gradients(out, names, leaves, grad_output)


def _with_gradients(out, names, leaves, grad_output) -> dict[str, torch.Tensor]:
    got = {"output": out.detach()}
    if grad_output is not None:
        present = [(n, t) for n, t in zip(names, leaves) if t is not None]
        grads = torch.autograd.grad(out, [t for _, t in present], grad_output)
        got.update((f"grad_{n}", g) for (n, _), g in zip(present, grads))
    return got


def reference_results(reference: Callable[..., torch.Tensor], values: Tensors, dtype: torch.dtype,
                      names: Sequence[str], grad_output: torch.Tensor | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(expected, PyTorch's own): `results` of `reference` on float64 copies of `values` (and of
    `grad_output`), and at low precision `dtype` the same on copies at `dtype` (None otherwise),
    each on the values' devices. Feed both to `assert_matches_reference`."""
    def at(dt):
        return ([None if t is None else t.detach().to(dt) for t in values], names,
                None if grad_output is None else grad_output.detach().to(dt))

    want = results(reference, *at(torch.float64))
    torch_at_dtype = results(reference, *at(dtype)) if dtype in LOW_PRECISION else None
    return want, torch_at_dtype


def assert_matches_reference(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], dtype: torch.dtype,
                             torch_at_dtype: dict[str, torch.Tensor] | None = None, *,
                             min_tolerance: Callable[[torch.Tensor], float] | None = None, context: str = "") -> None:
    """Every result `got[name]` within `tolerance(dtype, ...)` of the float64 `want[name]` (extra
    names in `want` are ignored); at low precision PyTorch's own error is measured from
    `torch_at_dtype[name]`. `min_tolerance(want[name])`, when given, raises a result's tolerance
    to at least that value. Raises one AssertionError listing every failure."""
    if dtype in LOW_PRECISION and torch_at_dtype is None:
        raise ValueError(f"at {dtype} the tolerance needs PyTorch's own results (torch_at_dtype)")
    failures = []
    for name, a in got.items():
        if a is None:
            failures.append(f"{name}: missing")
            continue
        if a.shape != want[name].shape:
            failures.append(f"{name}: shape {tuple(a.shape)} != {tuple(want[name].shape)}")
            continue
        if dtype in LOW_PRECISION:
            torch_error = rel_error(torch_at_dtype[name], want[name])
            tol, detail = tolerance(dtype, torch_error), f"PyTorch's own error at {dtype}: {torch_error:.3g}"
        else:
            tol, detail = tolerance(dtype), f"fixed for {dtype}"
        if min_tolerance is not None:
            tol = max(tol, min_tolerance(want[name]))
        err = rel_error(a, want[name])
        if not err <= tol:
            failures.append(f"{name}: relative error {err:.3g} > tolerance {tol:.3g} ({detail})")
    assert not failures, "\n".join(failures + ([context] if context else []))


def check_against_reference(run: Callable[..., torch.Tensor], reference: Callable[..., torch.Tensor],
                            inputs: Tensors, names: Sequence[str], *, values: Tensors | None = None,
                            place_grad_output: Callable[[torch.Tensor], torch.Tensor] | None = None,
                            min_tolerance: Callable[[torch.Tensor], float] | None = None,
                            context: str = "") -> dict[str, torch.Tensor]:
    """The backend-vs-reference check: `run(*inputs)` and its gradients against `reference` in float64.

    - inputs: what `run` gets (None for an absent bias), at the dtype under test (that of
      inputs[0]), in any layout and on any device; `names` names them ("input", "weight", ...).
    - The output gradient is drawn at random (float64, standard normal) and cast to the dtype;
      `place_grad_output` lays it out for `run` (a strided view, another device).
    - values: the float64 values `inputs` were rounded from, on the device the reference should
      run on; the reference then gets them, and the output gradient before rounding, as a user
      holding float64 data would expect. Default: the reference gets exactly what `run` got.
    - Checks: the output has the dtype and device of inputs[0]; `run` leaves its inputs as they
      were; every result within `tolerance` (see `assert_matches_reference`).

    Returns `run`'s results: {"output", "grad_<name>" for each input that is not None}.
    """
    dtype, device = inputs[0].dtype, inputs[0].device
    before = [None if t is None else t.detach().clone() for t in inputs]
    leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
    out = run(*leaves)
    assert out.dtype == dtype and out.device == device, (
        f"output {out.dtype} on {out.device}, inputs {dtype} on {device}")
    grad64 = torch.randn(out.shape, dtype=torch.float64)
    grad_output = grad64.to(dtype)
    run_grad = grad_output.to(device) if place_grad_output is None else place_grad_output(grad_output)
    got = _with_gradients(out, names, leaves, run_grad)
    for name, t, b in zip(names, inputs, before):  # e.g. an input activation applied in place
        if t is not None:
            assert torch.equal(t.detach().nan_to_num(7.0), b.nan_to_num(7.0)), f"{name} was modified"
    if values is None:  # the reference gets what run got
        values, grad64 = inputs, grad_output.to(torch.float64)
    ref_device = next(t.device for t in values if t is not None)
    want, torch_at_dtype = reference_results(reference, values, dtype, names, grad64.to(ref_device))
    assert_matches_reference(got, want, dtype, torch_at_dtype, min_tolerance=min_tolerance, context=context)
    return got
