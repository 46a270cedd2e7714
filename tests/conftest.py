"""Fixtures and pytest hooks for xsep's tests (plain helpers: helpers.py; comparing with the
reference: xsep.testing).

Environment knobs:
  XSEP_REQUIRE_NATIVE=1  a native test that cannot load the compiled library fails instead of skipping
                         (CI builds the library, so there a skip would hide a broken build)
  XSEP_REQUIRE_CUDA=1    a `cuda`-marked test fails instead of skipping when no GPU is visible
  XSEP_TESTS_NO_BUILD=1  never JIT-compile the library (use it only when prebuilt); native tests skip
  XSEP_TEST_THREADS=n    intra-op threads for the tests (default 1; see pytest_configure)
"""

from __future__ import annotations

import os
import sys
import zlib

import pytest
import torch
from helpers import CPU_BACKENDS, env_flag, require_native


def _import_triton_for_the_interpreter() -> None:
    """Triton's interpreter works only when triton.language was imported with TRITON_INTERPRET=1
    (its library functions are defined interpreted then), and importing xsep imports Triton (via
    torch._dynamo). Without a GPU, import it that way (pytest_configure, before any test module
    imports xsep), then restore the environment: the variable itself is set only while a Triton
    test runs (fixture triton_device), so that other tests see the triton backend unavailable on
    CPU, as users without it do."""
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


# --------------------------------------------------------------------------------------------------
# Hooks: the environment, threads and markers


def pytest_configure(config):
    _import_triton_for_the_interpreter()  # first: nothing may import xsep before it
    from xsep import _extension

    # One intra-op thread by default: the tests run thousands of tiny ops, and on a small shared
    # machine (CI runs other jobs beside this suite) an OpenMP team of 2 spinning on 2 busy cores
    # made them 10-20x slower. The multi-threaded code paths are tested explicitly (test_ops.py
    # compares 1 and 2 threads).
    torch.set_num_threads(int(os.environ.get("XSEP_TEST_THREADS", "1")))
    if env_flag("XSEP_TESTS_NO_BUILD") and not _extension.load(jit=False):
        # Automatic backend selection would otherwise compile the library on first use.
        _extension._state.update(error="not prebuilt, and XSEP_TESTS_NO_BUILD=1 forbids compiling it",
                                 how="failed")


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") is not None and not torch.cuda.is_available():
        if env_flag("XSEP_REQUIRE_CUDA"):
            pytest.fail("XSEP_REQUIRE_CUDA=1 but no CUDA device is visible")
        pytest.skip("needs a CUDA GPU (set XSEP_REQUIRE_CUDA=1 to make this a failure)")


# --------------------------------------------------------------------------------------------------
# Fixtures


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
    elif env_flag("XSEP_REQUIRE_CUDA"):
        pytest.fail("XSEP_REQUIRE_CUDA=1 but no CUDA device is visible")
    else:
        device = "cpu"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    from xsep import backends

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


@pytest.fixture(autouse=True)
def _fresh_automatic_choice():
    """xsep.functional remembers its automatic backend choices; tests change what they depend on
    (the committed results, this CPU's name, the selection itself), so each test starts afresh."""
    from xsep import functional

    functional.forget_automatic_choices()
    yield
    functional.forget_automatic_choices()


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
