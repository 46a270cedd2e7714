"""The library's two build paths share one source list (xsep/_build.py): setup.py's ahead-of-time
build (what CI installs) and the just-in-time ninja build used when nothing is prebuilt."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from xsep import _build, _extension
from xsep.ops.schemas import SCHEMAS

# The ops with hand-written CUDA kernels so far. Issue 4 ends when this is every op; until then the
# test below pins exactly which ones a CUDA build registers.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_source_list_covers_csrc():
    # Every C++/CUDA file under csrc/ is compiled: a new kernel file cannot be forgotten by one path.
    on_disk = {os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "csrc"))
               for f in fs if f.endswith((".cpp", ".cu"))}
    assert on_disk == set(_build.sources(with_cuda=True))
    # the CUDA ops' host code needs CUDA headers: left out of a CPU-only build
    assert not any(s.startswith(os.path.join("csrc", "cuda", "")) for s in _build.sources(with_cuda=False))
    # the just-in-time build puts every object file in one folder: names must not collide
    stems = [os.path.splitext(os.path.basename(s))[0] for s in _build.sources(with_cuda=True)]
    assert len(stems) == len(set(stems)), sorted(stems)


def test_cuda_arch_define_is_one_token(monkeypatch):
    # The arch list travels through shell and ninja as a -D flag: no quotes, spaces or ';' in it.
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0 9.0a")
    flags = [f for f in _build.nvcc_flags() if f.startswith("-DXSEP_CUDA_ARCHS=")]
    assert flags == ["-DXSEP_CUDA_ARCHS=8.0_9.0_9.0a"]


def test_just_in_time_build(tmp_path):
    # A fresh interpreter with XSEP_JIT=1 compiles the library from csrc/ with ninja (saying so),
    # loads it, and runs a fused op: what `pip install -e .` without a prebuilt library relies on.
    if os.environ.get("XSEP_TESTS_NO_BUILD") == "1":
        pytest.skip("XSEP_TESTS_NO_BUILD=1 forbids compiling")
    # CPU only: the ahead-of-time build already compile-checks the CUDA sources, and the GPU check
    # (scripts/gpu_check.sh) builds CUDA this way; here that would add minutes of nvcc.
    env = {**os.environ, "XSEP_JIT": "1", "XSEP_BUILD_DIR": str(tmp_path), "XSEP_SKIP_CUDA": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    code = ("import torch, xsep\n"
            "from xsep import functional as F, _extension\n"
            "x = torch.randn(2, 3, 7, 7); dw = torch.randn(3, 1, 3, 3); pw = torch.randn(4, 3, 1, 1)\n"
            "y = F.separable_conv2d(x, dw, pw, padding=1, backend='native')\n"
            "r = F.separable_conv2d(x, dw, pw, padding=1, backend='torch')\n"
            "assert torch.allclose(y, r, atol=1e-5), (y - r).abs().max()\n"
            "print('how=' + _extension.build_info()['how'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "xsep: compiling" in result.stderr
    assert "how=just-in-time" in result.stdout
    # Once built, a new process loads the same library without compiling, and says nothing of it.
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "xsep: compil" not in again.stderr
    assert "how=just-in-time" in again.stdout
    # XSEP_LIBRARY loads that file (what the GPU check does with a library built on another machine).
    env.pop("XSEP_JIT")
    carried = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                             env={**env, "XSEP_LIBRARY": str(tmp_path / "xsep_C.so")}, timeout=600)
    assert carried.returncode == 0, carried.stderr[-3000:]
    assert "xsep: compil" not in carried.stderr
    assert "how=XSEP_LIBRARY" in carried.stdout


def test_a_missing_xsep_library_is_named_in_the_error(tmp_path):
    code = "from xsep import _extension\nprint(_extension.load(), _extension.load_error())\n"
    env = {**os.environ, "XSEP_LIBRARY": str(tmp_path / "nothing.so"),
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("False FileNotFoundError: XSEP_LIBRARY=") and "nothing.so: no such file" in done.stdout


def test_cuda_build_registers_the_cuda_kernels(native):
    import torch

    if _extension.build_info().get("cuda") != "1":
        pytest.skip("this library was built without CUDA (no toolkit, or a CPU-only torch)")
    ops = {schema.name.removeprefix("xsep::") for schema in torch._C._jit_get_all_schemas()
           if schema.name.startswith("xsep::") and not schema.name.startswith("xsep::_")}
    with_cuda = {op for op in ops if torch._C._dispatch_has_kernel_for_dispatch_key(f"xsep::{op}", "CUDA")}
    assert ops == set(SCHEMAS) and with_cuda == ops


def test_failed_build_says_so_once(monkeypatch, capsys):
    # A just-in-time build that fails leaves the pure-PyTorch parts working (load() returns False,
    # never raises) but says so on stderr, with the error's last line, and keeps the whole error for
    # `python -m xsep info`; later calls do not try again.
    for key, value in {"loaded": False, "error": None, "how": None, "path": None}.items():
        monkeypatch.setitem(_extension._state, key, value)
    monkeypatch.setenv("XSEP_JIT", "1")
    calls = []

    def failing_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'xsep_C'\nhost.cpp:1: error: expected ';'")

    monkeypatch.setattr(_extension, "_jit_build", failing_build)
    assert _extension.load() is False
    err = capsys.readouterr().err
    assert "xsep: the build failed, so the native backend is unavailable" in err
    assert "host.cpp:1: error: expected ';'" in err
    assert "host.cpp:1" in _extension.load_error()
    assert _extension.load() is False and calls == [1]
    assert capsys.readouterr().err == ""
