"""Shared fixtures and helpers for xsep's tests.

Environment knobs:
  XSEP_REQUIRE_NATIVE=1  a native test that cannot load the compiled library fails instead of skipping
                         (CI builds the library, so there a skip would hide a broken build)
  XSEP_REQUIRE_CUDA=1    a `cuda`-marked test fails instead of skipping when no GPU is visible
  XSEP_TESTS_NO_BUILD=1  never JIT-compile the library (use it only when prebuilt); native tests skip
  XSEP_TEST_THREADS=n    intra-op threads for the tests (default 1; see pytest_configure)
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import zlib

import pytest
import torch


def _import_triton_for_the_interpreter() -> None:
    """Triton's interpreter works only when triton.language was imported with TRITON_INTERPRET=1
    (its library functions are defined interpreted then), and importing xsep imports Triton (via
    torch._dynamo). Without a GPU, import it that way now, then restore the environment: the
    variable itself is set only while a Triton test runs (fixture triton_device), so that other
    tests see the triton backend unavailable on CPU, as users without it do."""
    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except Exception:  # no Triton: its tests skip, saying why
        pass
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


_import_triton_for_the_interpreter()

from xsep import _extension, backends  # noqa: E402  (after the Triton import above)

LOW_PRECISION = (torch.bfloat16, torch.float16)
DTYPE_NAMES = {torch.float64: "f64", torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------
# The compiled library and the backends


@functools.cache
def native_available() -> bool:
    """Whether torch.ops.xsep exists (compiling the library on first use, as users get it)."""
    return _extension.load(jit=not _env_flag("XSEP_TESTS_NO_BUILD"))


def require_native() -> None:
    """Skips the calling test when the library cannot load, or fails it under XSEP_REQUIRE_NATIVE=1."""
    if native_available():
        return
    why = f"the xsep library did not load: {_extension.load_error() or 'not built (XSEP_TESTS_NO_BUILD)'}"
    if _env_flag("XSEP_REQUIRE_NATIVE"):
        pytest.fail(f"XSEP_REQUIRE_NATIVE=1 but {why}")
    pytest.skip(why)


def _cpu_backends() -> list[str]:
    # 'native' is always listed and skips at run time when the library does not load, so that the
    # skip (and its reason) is visible in the report rather than the case silently disappearing.
    # 'triton' runs CPU tensors only in Triton's (slow) interpreter: its own tests are in tests/triton.
    return ["native", "torch"]


CPU_BACKENDS = _cpu_backends()


@pytest.fixture(params=CPU_BACKENDS)
def backend(request) -> str:
    """Each backend that can run CPU tensors."""
    if request.param == "native":
        require_native()
    return request.param


@pytest.fixture
def native() -> None:
    """For tests of the compiled library itself."""
    require_native()


@pytest.fixture
def triton_device(monkeypatch) -> str:
    """The device for the Triton backend's tests: 'cuda' where a GPU is visible (the kernels are
    compiled), else 'cpu' with Triton's interpreter. TRITON_INTERPRET=1 is set for the test only
    (other tests must see the triton backend unavailable on CPU); the kernel modules are imported
    lazily, so they are defined interpreted. On a GPU autotuning is off (XSEP_TRITON_AUTOTUNE=0).
    Every buffer the launchers allocate starts NaN-filled."""
    if torch.cuda.is_available():
        device = "cuda"
        # One fixed configuration per kernel: autotuning would compile and time every one for
        # every shape (the benchmark verifies the autotuned kernels on real layers).
        monkeypatch.setenv("XSEP_TRITON_AUTOTUNE", "0")
    elif _env_flag("XSEP_REQUIRE_CUDA"):
        pytest.fail("XSEP_REQUIRE_CUDA=1 but no CUDA device is visible")
    else:
        device = "cpu"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = backends.unavailable_reason("triton", device)
    if reason is not None:
        pytest.skip(f"the triton backend cannot run on {device}: {reason}")
    from xsep.triton import _common

    monkeypatch.setattr(_common, "poison_buffers", True)
    return device


@pytest.fixture
def no_backend_env(monkeypatch):
    """Tests that rely on automatic selection must not see a developer's XSEP_BACKEND."""
    monkeypatch.delenv("XSEP_BACKEND", raising=False)


# --------------------------------------------------------------------------------------------------
# Threads, markers and seeding


def pytest_configure(config):
    # One intra-op thread by default: the tests run thousands of tiny ops, and on a small shared
    # machine (CI runs other jobs beside this suite) an OpenMP team of 2 spinning on 2 busy cores
    # made them 10-20x slower. The multi-threaded code paths are tested explicitly (test_ops.py
    # compares 1 and 2 threads).
    torch.set_num_threads(int(os.environ.get("XSEP_TEST_THREADS", "1")))
    if _env_flag("XSEP_TESTS_NO_BUILD") and not _extension.load(jit=False):
        # Automatic backend selection would otherwise compile the library on first use.
        _extension._state.update(error="not prebuilt, and XSEP_TESTS_NO_BUILD=1 forbids compiling it",
                                 how="failed")



def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        if _env_flag("XSEP_REQUIRE_CUDA"):
            pytest.fail("XSEP_REQUIRE_CUDA=1 but no CUDA device is visible")
        pytest.skip("needs a CUDA GPU (set XSEP_REQUIRE_CUDA=1 to make this a failure)")


@pytest.fixture(autouse=True)
def _seed(request):
    """A fixed seed per test (from its id), so a failure reproduces when the test runs alone."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=["fence-before", "fence-after"])
def emu(request):
    """For tests/cuda_emu (which is on sys.path for its own tests): torch.ops.xsep_emu, the CUDA
    kernels on the CPU emulator, with the thread order seeded from the test, each test run twice,
    its tensors guarded by an inaccessible page right before them, then right after them
    (bindings.cpp's memcheck: an out-of-bounds access faults and fails the test)."""
    import emu_build

    return emu_build.require_ops(request.node.nodeid, fence=request.param.removeprefix("fence-"))


# --------------------------------------------------------------------------------------------------
# Numerical helpers


def rel_error(actual: torch.Tensor, reference: torch.Tensor) -> float:
    """||actual - reference|| / ||reference|| in float64 (the absolute error when the reference is 0;
    NaN when `actual` has a NaN or inf, which then fails every `<= tol` comparison)."""
    assert actual.shape == reference.shape, (actual.shape, reference.shape)
    a, r = actual.detach().to(torch.float64), reference.detach().to(torch.float64)
    if not torch.isfinite(a).all():
        return float("nan")
    diff = torch.linalg.vector_norm(a - r).item()
    ref = torch.linalg.vector_norm(r).item()
    return diff / ref if ref > 0 else diff


# Tolerances relative to a float64 reference. float64/float32: fixed, a few hundred ulps of the
# accumulation over the small reductions used here. Low precision: the kernels may not be worse than
# PyTorch itself at that precision (see low_precision_tolerance).
FIXED_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
# A floor for low precision, so that a lucky, near-exact PyTorch result (tiny or empty tensors)
# does not demand the impossible: an eighth of the dtype's epsilon.
LOW_PRECISION_FLOOR = {dt: torch.finfo(dt).eps / 8 for dt in LOW_PRECISION}


def low_precision_tolerance(dtype: torch.dtype, torch_error: float) -> float:
    """Allowed relative error at `dtype`: twice PyTorch's own error for the same computation at
    that dtype (both measured against the float64 reference), plus a floor."""
    return 2 * torch_error + LOW_PRECISION_FLOOR[dtype]


def assert_matches_reference(got: dict, want: dict, dtype: torch.dtype, torch_at_dtype: dict | None = None) -> None:
    """Each named result within tolerance of the float64 reference `want[name]`: fixed for
    float32/float64, else twice PyTorch's own error `torch_at_dtype[name]` (the same computation in
    `dtype`) plus the floor."""
    for name, a in got.items():
        assert a.shape == want[name].shape, f"{name}: shape {tuple(a.shape)} != {tuple(want[name].shape)}"
        tol = FIXED_TOLERANCE[dtype] if dtype not in LOW_PRECISION else \
            low_precision_tolerance(dtype, rel_error(torch_at_dtype[name], want[name]))
        err = rel_error(a, want[name])
        assert err <= tol, f"{name}: relative error {err:.3g} > {tol:.3g}"


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
