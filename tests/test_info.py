"""`python -m xsep info`: what a user pastes into a bug report."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch
from helpers import native_available

import xsep
from xsep import backends, info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def info_output() -> str:
    """The command's output, run as a user runs it (a fresh interpreter; the library, already
    built by the test session or CI, is loaded, not recompiled)."""
    native_available()  # build first (once, cached), so the subprocess only loads it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    env.pop("XSEP_BACKEND", None)
    result = subprocess.run([sys.executable, "-m", "xsep", "info"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_versions(info_output):
    # The first line has xsep's, Python's and torch's versions, torch's CUDA and Triton's.
    first = info_output.splitlines()[0]
    assert f"xsep {xsep.__version__}" in first
    assert f"python {platform.python_version()}" in first
    assert f"torch {torch.__version__}" in first
    assert "CUDA" in first and "triton" in first


def _loaded(info_output: str) -> bool:
    """Whether the subprocess loaded the library (it must when this process did; it may when this
    process was told not to compile, XSEP_TESTS_NO_BUILD, and a build is cached)."""
    loaded = not any(ln.startswith("library: not loaded: ") for ln in info_output.splitlines())
    if native_available():
        assert loaded, info_output
    return loaded


def test_build_line(info_output):
    # What the library was built for (CPU only or CPU + CUDA with its archs, the CPU ISA, the
    # compiler), or why it did not load.
    line = next(ln for ln in info_output.splitlines() if ln.startswith("library: "))
    if _loaded(info_output):
        assert "CPU only" in line or "CPU + CUDA (archs " in line
        assert "CPU kernels use " in line
    else:
        assert len(line) > len("library: not loaded: ")


def test_a_line_per_backend_and_device(info_output):
    # One line per backend x device saying available, or unavailable and why; then the
    # automatic choice per visible device, consistent with the library's state.
    lines = info_output.splitlines()
    for name in backends.BACKENDS:
        for device in ("cpu", "cuda"):
            matches = [ln for ln in lines if ln.strip().startswith(f"{name}/{device} ")]
            assert len(matches) == 1, (name, device)
            status = matches[0].split(None, 1)[1]
            assert status == "available" or (status.startswith("unavailable: ") and len(status) > 14)
    status = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines if ln.startswith("  ")}
    assert status["torch/cpu"] == "available"
    assert (status["native/cpu"] == "available") == _loaded(info_output)
    if not torch.cuda.is_available():
        assert status["native/cuda"] == "unavailable: no CUDA device is visible"
    auto = next(ln for ln in lines if ln.startswith("automatic choice on cpu: "))
    # native where the library loads and the committed results show the default op (fused
    # separable, channels_last) at least as fast on this kind of CPU.
    faster = backends.measured_faster_on_cpu("separable_conv2d", "channels_last")
    assert auto == "automatic choice on cpu: " + ("native" if _loaded(info_output) and faster else "torch")


def test_automatic_choice_per_op_on_cpu(info_output):
    # On CPU the automatic choice follows the committed results per op, layout and allocator
    # setting: info names the setting and what each op gets in each layout.
    line = next(ln for ln in info_output.splitlines() if ln.startswith("automatic choice per op on cpu"))
    head, choices = line.split("): ", 1)
    assert head.endswith(f"allocator {backends.allocator_setting()}")
    expected = [f"{op} {backends.select(None, 'cpu', op, 'channels_last')} / {backends.select(None, 'cpu', op, 'nchw')}"
                for op in backends.OPS]
    assert choices.split(", ") == expected


def test_collect_is_structured():
    # The data behind the text: every backend/device key, reasons None or strings.
    data = info.collect()
    assert data["xsep"] == xsep.__version__ and data["torch"] == torch.__version__
    assert set(data["backends"]) == {f"{n}/{d}" for n in backends.BACKENDS for d in ("cpu", "cuda")}
    assert all(r is None or isinstance(r, str) for r in data["backends"].values())
    assert data["build"]["loaded"] == native_available()


def test_usage_error():
    # No command: argparse's usage error (exit status 2), not a traceback.
    from xsep.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
