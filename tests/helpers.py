"""Plain helpers for xsep's tests (no fixtures: those are in conftest.py), imported as
`from helpers import ...` (tests/ is on sys.path: pytest puts it there for tests/conftest.py).

- native_available(), require_native(): whether the compiled library loads; skip (or fail under
  XSEP_REQUIRE_NATIVE=1) a test that needs it; require_cuda_kernels(*ops) for tests/cuda.
- poisoned(values, layout): the same values in another layout (LAYOUTS), the strided one inside a
  NaN-filled buffer, so a kernel that ignores strides produces NaN; placed(): a copy of float64
  values at a dtype, in a layout, on a device.
- pairwise(factors): a covering design of test cases (every pair of values at least once).
- memory_format_of, dispatched_ops, DTYPE_NAMES (for test ids), CPU_BACKENDS.

Comparing a backend with the float64 reference, and the tolerance rule, are in `xsep.testing`
(check_against_reference, reference_results, assert_matches_reference, rel_error, tolerance).

Nothing here imports xsep at import time: conftest.py imports this module before its
pytest_configure hook imports Triton for the interpreter, which must come before xsep.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os

import pytest
import torch

DTYPE_NAMES = {torch.float64: "f64", torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}

# 'native' is always listed and skips at run time when the library does not load, so that the
# skip (and its reason) is visible in the report rather than the case silently disappearing.
# 'triton' runs CPU tensors only in Triton's (slow) interpreter: its own tests are in tests/triton.
CPU_BACKENDS = ["native", "torch"]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------
# The compiled library


@functools.cache
def native_available() -> bool:
    """Whether torch.ops.xsep exists (compiling the library on first use, as users get it)."""
    from xsep import _extension

    return _extension.load(jit=not env_flag("XSEP_TESTS_NO_BUILD"))


def require_native() -> None:
    """Skips the calling test when the library cannot load, or fails it under XSEP_REQUIRE_NATIVE=1."""
    if native_available():
        return
    from xsep import _extension

    why = f"the xsep library did not load: {_extension.load_error() or 'not built (XSEP_TESTS_NO_BUILD)'}"
    if env_flag("XSEP_REQUIRE_NATIVE"):
        pytest.fail(f"XSEP_REQUIRE_NATIVE=1 but {why}")
    pytest.skip(why)


def require_cuda_kernels(*ops: str) -> None:
    """For tests/cuda: skips like require_native, then fails when the library lacks a CUDA kernel
    for one of `ops` (e.g. "separable_conv2d": built without CUDA, the tests would test nothing)."""
    require_native()
    for op in ops:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(f"xsep::{op}", "CUDA"):
            pytest.fail(f"the library was built without the CUDA {op} kernel")


# --------------------------------------------------------------------------------------------------
# Layouts


def memory_format_of(t: torch.Tensor) -> torch.memory_format | None:
    """contiguous_format or channels_last when `t` is unambiguously in one of them, else None
    (size-1 or empty dimensions can make a tensor both; other strides make it neither)."""
    nchw, nhwc = t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)
    if nchw and not nhwc:
        return torch.contiguous_format
    if nhwc and not nchw:
        return torch.channels_last
    return None


LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed")


def poisoned(values: torch.Tensor, layout: str = "sliced") -> torch.Tensor:
    """`values` with equal values but the given layout:

    - contiguous, channels_last (4-D only): dense copies;
    - sliced: a strided view (every other element along the last dimension, offset by one in every
      dimension) into a larger buffer whose other elements are NaN, so a kernel that ignores strides
      or storage offsets, or reads past the view, produces NaN;
    - transposed (4-D only): a view whose H and W strides are swapped (a transposed contiguous tensor).
    """
    if layout == "contiguous":
        return values.contiguous()
    if layout == "channels_last":
        return values.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return values.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == "sliced":
        *outer, last = values.shape
        buffer = torch.full([s + 2 for s in outer] + [2 * last + 3], float("nan"), dtype=values.dtype)
        view = buffer[tuple(slice(1, s + 1) for s in outer) + (slice(1, 2 * last + 1, 2),)]
        view.copy_(values)
        assert view.shape == values.shape and (values.numel() <= 1 or not view.is_contiguous())
        return view
    raise ValueError(f"unknown layout {layout!r}")


def placed(values: torch.Tensor, dtype: torch.dtype, layout: str, device: torch.device | str | None = None) -> torch.Tensor:
    """A copy of `values` at `dtype` in `layout` (see poisoned; channels_last and transposed only
    for 4-D tensors, others stay contiguous) on `device` (default: that of `values`). 'sliced'
    keeps its NaN-surrounded strided view on the CPU only: a copy to a GPU makes it dense."""
    t = values.detach().to(dtype, copy=True)
    if t.dim() != 4 and layout in ("channels_last", "transposed"):
        layout = "contiguous"
    return poisoned(t.cpu() if layout == "sliced" else t, layout).to(values.device if device is None else device)


def dispatched_ops(fn, *args, **kwargs) -> set[str]:
    """Names of the operators (e.g. 'xsep::separable_conv2d', 'aten::convolution') that reach the
    backend kernels while `fn` runs: which implementation actually ran."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: set[str] = set()

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    with Spy():
        fn(*args, **kwargs)
    return seen


@contextlib.contextmanager
def intra_op_threads(count: int):
    """torch at `count` intra-op threads inside the block, the thread count restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fused_products_on_xsep() -> bool:
    """Whether the CPU fused op's products run on xsep's own kernel in this process
    (XSEP_CPU_FUSED_GEMM, csrc/cpu/gemm.h), which gives the same bits at any thread count."""
    return "cpu_fused_gemm=xsep" in torch.ops.xsep._build_info()


def at_one_and_two_threads(fn):
    """(fn() with torch at 1 intra-op thread, fn() at 2), the thread count restored after: for the
    checks that a result does not depend on how work is split across threads."""
    with intra_op_threads(1):
        one = fn()
    with intra_op_threads(2):
        two = fn()
    return one, two


# --------------------------------------------------------------------------------------------------
# Covering designs


def pairwise(factors: dict[str, tuple]) -> list[dict]:
    """A small set of rows (one value per factor) in which every pair of values of every two
    factors appears at least once: greedy and deterministic (AETG-style). Far fewer cases than
    the Cartesian product, and most interaction bugs involve two parameters."""
    names = list(factors)
    sizes = [len(factors[n]) for n in names]
    uncovered = {(i, a, j, b) for i, j in itertools.combinations(range(len(names)), 2)
                 for a in range(sizes[i]) for b in range(sizes[j])}
    rows: list[list[int]] = []
    while uncovered:
        i, a, j, b = min(uncovered)
        row: list[int | None] = [None] * len(names)
        row[i], row[j] = a, b
        for k in range(len(names)):
            if row[k] is not None:
                continue

            def gain(v, k=k):
                return sum(((min(k, m), v if k < m else row[m], max(k, m), row[m] if k < m else v) in uncovered)
                           for m in range(len(names)) if row[m] is not None)

            # Ties rotate with the row count, so that no value is favoured.
            row[k] = max(range(sizes[k]), key=lambda v: (gain(v), -((v - len(rows)) % sizes[k])))
        rows.append(row)
        uncovered -= {(p, row[p], q, row[q]) for p, q in itertools.combinations(range(len(names)), 2)}
    return [{n: factors[n][v] for n, v in zip(names, row)} for row in rows]
