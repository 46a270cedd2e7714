"""Loads the compiled library that defines torch.ops.xsep: the prebuilt xsep._C when setup.py built
one, else a just-in-time build with ninja from the same sources (xsep/_build.py). XSEP_JIT=1 uses
the just-in-time build even when a prebuilt library exists (handy while editing kernels: ninja
rebuilds only what changed). XSEP_LIBRARY=PATH loads that compiled library instead (one built from the
same sources against the same torch, e.g. on another machine: scripts/build_for_gpu_machine.sh).

Nothing here raises at import: `load()` returns whether the ops exist and `load_error()` says why
not, so the pure-PyTorch parts of xsep work without a compiler.
"""

from __future__ import annotations

import os
import sys
import threading

import torch

from xsep import _build

_lock = threading.Lock()
_state: dict = {"loaded": False, "error": None, "how": None, "path": None}
# xsep._C's function per forward op, for the modules' calls (csrc/module_calls.cpp, used by
# xsep.functional.module_call); empty until the library is loaded, or where it has none. Their first
# argument: the layouts the native backend is chosen for, a mask of LAYOUT_BITS.
MODULE_CALLS: dict = {}
LAYOUT_BITS = {"nchw": 1, "channels_last": 2}


def _prebuilt_path() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("xsep._C")
    return spec.origin if spec is not None and spec.origin else None


def _jit_build() -> str:
    from torch.utils import cpp_extension

    if not os.path.isdir(_build.CSRC):
        raise RuntimeError(
            f"xsep._C is not built and the C++ sources are not at {_build.CSRC}: install xsep from a "
            "source checkout with `pip install --no-build-isolation -e .`"
        )
    with_cuda, why = _build.cuda_build_decision()
    if with_cuda:
        _build.prepare_cuda_env()
    sources = [os.path.join(_build.ROOT, s) for s in _build.sources(with_cuda)]
    build_dir = os.environ.get("XSEP_BUILD_DIR") or os.path.join(
        cpp_extension._get_build_directory("xsep_C", verbose=False)
    )
    os.makedirs(build_dir, exist_ok=True)
    generated = _build.generate_headers(os.path.join(build_dir, "generated"))
    os.environ.setdefault("MAX_JOBS", str(_build.max_jobs()))
    # Said only when there is something to compile: a library already built here loads silently.
    compiling = not _up_to_date(build_dir)
    if compiling:
        print(
            f"xsep: compiling the C++{'/CUDA' if with_cuda else ''} library in {build_dir} "
            f"(first use; this takes a few minutes; CUDA: {why}) ...",
            file=sys.stderr, flush=True,
        )
    cpp_extension.load(
        name="xsep_C",
        sources=sources,
        extra_include_paths=_build.include_dirs(with_cuda, generated),
        extra_cflags=_build.cxx_flags(with_cuda),
        extra_cuda_cflags=_build.nvcc_flags() if with_cuda else None,
        extra_ldflags=_build.link_flags(),
        build_directory=build_dir,
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=os.environ.get("XSEP_VERBOSE_BUILD", "") == "1",
    )
    if compiling:
        print("xsep: compiled.", file=sys.stderr, flush=True)
    return os.path.join(build_dir, "xsep_C.so")


def _up_to_date(build_dir: str) -> bool:
    """Whether ninja has nothing to do in build_dir (its dry run says so; False when it cannot tell:
    no earlier build, or no ninja). Sources changed since then, or flags, count as work: the build
    file is rewritten with new flags only when they differ, and ninja then rebuilds."""
    import subprocess

    if not os.path.exists(os.path.join(build_dir, "build.ninja")) or not os.path.exists(
            os.path.join(build_dir, "xsep_C.so")):
        return False
    try:
        dry = subprocess.run(["ninja", "-C", build_dir, "-n"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return dry.returncode == 0 and "no work to do" in dry.stdout


def load(jit: bool = True) -> bool:
    """Makes torch.ops.xsep available; True on success. Compiles on first use if needed
    (unless jit=False). Registers the Python side of the ops (fake kernels, autograd) once."""
    with _lock:
        if _state["loaded"]:
            return True
        if _state["error"] is not None and _state["how"] == "failed":
            return False
        try:
            library = os.environ.get("XSEP_LIBRARY", "")
            path = None if os.environ.get("XSEP_JIT") == "1" else _prebuilt_path()
            if library:  # a library built elsewhere against this torch (the GPU check carries one)
                if not os.path.isfile(library):
                    raise FileNotFoundError(f"XSEP_LIBRARY={library}: no such file")
                torch.ops.load_library(library)
                path, _state["how"] = library, "XSEP_LIBRARY"
            elif path is not None:
                torch.ops.load_library(path)
                _state["how"] = "prebuilt"
            elif not jit:
                return False
            else:
                try:
                    path = _jit_build()
                except Exception as exc:  # said once here: every later load() returns False silently
                    print(f"xsep: the build failed, so the native backend is unavailable ({type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}); "
                          "`python -m xsep info` shows why", file=sys.stderr, flush=True)
                    raise
                _state["how"] = "just-in-time"
            _state["path"] = path
            module = _python_module(path)
            if module is not None:
                MODULE_CALLS.update({op: getattr(module, op) for op in dir(module) if op.endswith("_conv2d")})
            from xsep import ops

            ops.register("xsep")
            _state["loaded"] = True
        except Exception as exc:  # reported by load_error(), `python -m xsep info`, backends
            _state["error"] = f"{type(exc).__name__}: {exc}"
            _state["how"] = "failed"
        return _state["loaded"]


def _python_module(path: str):
    """The library as the Python module xsep._C (its functions: csrc/module_calls.cpp), whichever
    way it was loaded; None where it is not one (the modules then take the public path)."""
    import importlib.machinery
    import importlib.util

    try:
        loader = importlib.machinery.ExtensionFileLoader("xsep._C", path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader("xsep._C", loader))
        loader.exec_module(module)
        return module
    except (ImportError, OSError):
        return None


def load_error() -> str | None:
    return _state["error"]


def build_info() -> dict:
    """What the loaded library was built with (from the library itself)."""
    if not load():
        return {"loaded": False, "error": load_error()}
    info = dict(item.split("=", 1) for item in torch.ops.xsep._build_info().split(";") if item)
    info["cuda_archs"] = info.get("cuda_archs", "").replace("_", ";")
    info.update(loaded=True, how=_state["how"], path=_state["path"])
    return info
