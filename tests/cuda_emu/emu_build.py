"""Builds the CUDA kernels (every csrc/cuda/*.cu, and the emulator's own tests/cuda_emu/*.cu) for
the CPU emulator in cuda_emu.h, with the bindings in bindings.cpp, as the torch library
`torch.ops.xsep_emu` (tests only, never shipped).

Each .cu file (and .cuh header) is translated into C++ that g++ compiles: the emulator header
first, the `<<<...>>>` launches rewritten into `::xsep_emu::launch(...)(args)`, and `__shared__`
arrays into static ones the emulator poisons before each block; `#line` keeps compiler messages
and __FILE__/__LINE__ pointing at the .cu file. include/c10/cuda/CUDAException.h shadows c10's
(whose launch check calls the CUDA runtime) with the emulator's. The build is cached by torch's
extension builder (ninja: rebuilt when a source, header or flag changes).

The tests' build also compiles the CUDA ops' host code (host_sources) and registers it for CPU
tensors: torch.ops.xsep_emu.separable_conv2d and the other ops of xsep/ops/schemas.py, with the same
schemas, run exactly what torch.ops.xsep runs on a GPU (tests/cuda runs on both).

A second build, `torch.ops.xsep_emu_counters` (load(COUNTERS)), holds the same ops and the memory
counters (counters.h): every file compiled with gcc's thread-sanitizer instrumentation, whose calls
counters.cpp answers itself. It is slower and only the counters' tests and report use it.

`python tests/cuda_emu/emu_build.py [xsep_emu_counters]` builds it and says where, for debugging a
compile error.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CUDA_SOURCES = os.path.join(ROOT, "csrc", "cuda")
NAME = "xsep_emu"
COUNTERS = "xsep_emu_counters"
# Per build: its own sources in tests/cuda_emu, and flags. Both: -fno-gnu-unique keeps the inline
# variables and function statics (xsep::kSchemas, the kernels' shared arrays) this library's own,
# where gcc's default (unique symbols, bound process-wide) would bind them to those of xsep's own
# library loaded first, even one built from older sources. The counters': every access instrumented
# (no sanitizer runtime linked: counters.cpp defines the hooks); -fno-tree-sra keeps a vector load or
# store one access, as written (g++ would split one whose elements are used apart); -fno-tree-vectorize
# keeps scalar accesses scalar; -g1: lines for addr2line, in
# DWARF 4 (binutils 2.40's addr2line misnames the files of DWARF 5 line tables: their file 0 vs 1).
BUILDS = {
    NAME: (["bindings.cpp", "cuda_host_emu.cpp"], ["-fno-gnu-unique"]),
    COUNTERS: (["counters_bindings.cpp", "counters.cpp"],
               ["-fsanitize=thread", "-fno-tree-sra", "-fno-tree-vectorize", "-fno-gnu-unique", "-g1", "-gdwarf-4"]),
}

if ROOT not in sys.path:  # run as a script
    sys.path.append(ROOT)
from xsep import _build  # noqa: E402  (the repository's own CUDA toolkit lookup)


@functools.cache
def cuda_include_dir() -> str | None:
    """The CUDA toolkit's include folder (cuda_runtime.h: dim3, cudaStream_t, the host definitions
    of __device__ and friends), None without a toolkit. The pip CUDA wheels' headers lack crt/."""
    cuda_home = _build.find_cuda_home()
    include = os.path.join(cuda_home, "include") if cuda_home else None
    ok = include is not None and all(os.path.isfile(os.path.join(include, h))
                                     for h in ("cuda_runtime.h", os.path.join("crt", "host_config.h")))
    return include if ok else None


def _kernel_start(text: str, launch: int) -> int:
    """Start of the kernel expression before `<<<` at `launch`: a qualified name with optional
    template arguments (which may hold parentheses and nested angle brackets)."""
    i = launch
    while i > 0 and text[i - 1].isspace():
        i -= 1
    if text[i - 1] == ">":
        angles = parens = 0
        while True:
            i -= 1
            c = text[i]
            if c in ")]":
                parens += 1
            elif c in "([":
                parens -= 1
            elif parens == 0 and c == ">":
                angles += 1
            elif parens == 0 and c == "<":
                angles -= 1
                if angles == 0:
                    break
        while i > 0 and text[i - 1].isspace():
            i -= 1
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def _matching_paren(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def rewrite_launches(text: str, path: str) -> str:
    """`kernel<...><<<grid, block[, smem[, stream]]>>>(args)` -> `::xsep_emu::launch({__FILE__,
    __LINE__, "kernel<...>"}, kernel<...>, grid, block[, ...])(args)`, keeping every newline so that
    line numbers still match. `kernel` is a function (with all template arguments explicit, as
    launch deduces the parameter types from it) or a function pointer."""
    out, pos = [], 0
    while (launch := text.find("<<<", pos)) != -1:
        if "//" in text[text.rfind("\n", 0, launch) + 1:launch]:  # in a comment
            out.append(text[pos:launch + 3])
            pos = launch + 3
            continue
        line = text.count("\n", 0, launch) + 1
        config_end = text.find(">>>", launch)
        args_open = config_end + 3
        while args_open < len(text) and text[args_open].isspace():
            args_open += 1
        start = _kernel_start(text, launch)
        kernel = text[start:launch].rstrip()
        if config_end == -1 or args_open >= len(text) or text[args_open] != "(" or not kernel:
            raise ValueError(f"{path}:{line}: cannot parse this kernel launch for the CUDA emulator")
        args_close = _matching_paren(text, args_open)
        name = " ".join(kernel.split()).replace('"', '\\"')
        out.append(text[pos:start])
        out.append(f'::xsep_emu::launch({{__FILE__, __LINE__, "{name}"}}, {kernel}, '
                   f"{text[launch + 3:config_end]}){text[config_end + 3:args_close + 1]}")
        pos = args_close + 1
    out.append(text[pos:])
    return "".join(out)


# `__shared__ [attributes] T name[...]...;` on one line (not `extern`: dynamic shared memory).
_SHARED = re.compile(r"(?<!extern )__shared__([^;\n]*?)\b(\w+)\s*((?:\[[^\]\n]*\]\s*)*);")


def register_shared(text: str) -> str:
    """`__shared__ ... name[...];` -> a static array (blocks run one at a time, so that is the
    block's shared memory) that the emulator poisons before each block, as a GPU block's shared
    memory does not hold what another block left there."""
    return _SHARED.sub(lambda m: f"static{m[1]}{m[2]}{m[3]}; [[maybe_unused]] static const ::xsep_emu::SharedArray "
                                 f"xsep_emu_shared_{m[2]}({m[2]});", text)


def translate(path: str) -> str:
    """The C++ the emulator build compiles for one .cu file or .cuh header (headers launch kernels
    too); the emulator header comes first in each."""
    text = register_shared(rewrite_launches(open(path, encoding="utf-8").read(), path))
    rel = os.path.relpath(path, ROOT)
    return (f"// Generated by tests/cuda_emu/emu_build.py from {rel} for the CPU emulator: do not edit.\n"
            f'#include "cuda_emu.h"\n#line 1 "{path}"\n{text}')


def host_sources() -> list[str]:
    """The CUDA ops' host code as a GPU build compiles it (argument checks, kernel choice, layouts,
    workspaces, launches), which the tests' build registers for CPU tensors as torch.ops.xsep_emu's
    depthwise_conv2d, separable_conv2d_backward and the rest (register_cuda.cpp under XSEP_CUDA_EMU):
    tests/cuda runs it. The CUDA runtime calls stay out: cuda_host.cpp gives way to
    cuda_host_emu.cpp, and include/c10/cuda/CUDAGuard.h shadows the device guard."""
    host = [p for p in sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cpp"))) if os.path.basename(p) != "cuda_host.cpp"]
    return [*host, os.path.join(_build.CSRC, "common", "conv_args.cpp")]


def build_directory(name: str = NAME) -> str:
    from torch.utils import cpp_extension

    return cpp_extension._get_build_directory(name, verbose=False)


@functools.cache
def load(name: str = NAME) -> None:
    """Builds (if needed) and loads the emulated kernels as torch.ops.<name> (NAME or COUNTERS)."""
    from torch.utils import cpp_extension

    include = cuda_include_dir()
    if include is None:
        raise RuntimeError("no CUDA toolkit headers (cuda_runtime.h) were found; set CUDA_HOME")
    bindings, flags = BUILDS[name]
    build_dir = build_directory(name)
    # The translations, as translated/cuda/*: first on the include path, so that `#include
    # "cuda/gemm.cuh"` finds the translated header (csrc's plain .h files are used as they are).
    translated = os.path.join(build_dir, "translated")
    os.makedirs(os.path.join(translated, "cuda"), exist_ok=True)
    # bindings.cpp uses the host code's layout helpers (common/layout.cpp, plain ATen).
    sources = [os.path.join(HERE, f) for f in ["cuda_emu.cpp", *bindings]]
    sources.append(os.path.join(_build.CSRC, "common", "layout.cpp"))
    if name == NAME:
        sources += host_sources()
    paths = [p for d in (CUDA_SOURCES, HERE) for ext in ("cu", "cuh") for p in glob.glob(os.path.join(d, f"*.{ext}"))]
    for path in sorted(paths):
        base = os.path.basename(path)
        out = os.path.join(translated, "cuda", base[:-3] + "_emu.cpp" if base.endswith(".cu") else base)
        _build.write_if_changed(out, translate(path))
        if base.endswith(".cu"):
            sources.append(out)
    generated = _build.generate_headers(os.path.join(build_dir, "generated"))  # xsep_contract.h
    os.environ.setdefault("MAX_JOBS", str(_build.max_jobs()))
    cpp_extension.load(
        name=name,
        sources=sources,
        extra_include_paths=[translated, _build.CSRC, generated, HERE, os.path.join(HERE, "include"), include],
        # -fno-strict-aliasing: kernels reinterpret memory as vectors, as CUDA code does.
        extra_cflags=["-O2", "-DXSEP_CUDA_EMU", "-fno-strict-aliasing", "-Wno-unknown-pragmas", *flags],
        build_directory=build_dir,
        is_python_module=False,
        with_cuda=False,
        verbose=False,
    )


@functools.cache
def _load_error(name: str = NAME) -> str | None:
    """None once loaded, else why not; remembered, or every test would retry a failing build."""
    try:
        load(name)
    except Exception as e:  # reported by every test that needs the build
        return f"{type(e).__name__}: {e}"
    return None


FENCES = {"none": 0, "before": 1, "after": 2}


def require_ops(test_id: str, fence: str = "none", name: str = NAME):
    """torch.ops.<name> (default xsep_emu) for the test `test_id`, with the emulator's thread order seeded from it
    (so a failure reproduces when the test runs alone) and the launchers' tensors guarded by an
    inaccessible page `fence` them ("before", "after"; see bindings.cpp), or not ("none"). Skips when no CUDA toolkit headers are
    found or XSEP_TESTS_NO_BUILD=1 forbids compiling, failing instead under XSEP_REQUIRE_NATIVE=1
    (CI); a failed build fails."""
    import pytest
    import torch

    why = None
    if _build._env_flag("XSEP_TESTS_NO_BUILD"):
        why = "XSEP_TESTS_NO_BUILD=1 forbids compiling the CUDA emulator"
    elif cuda_include_dir() is None:
        why = "no CUDA toolkit headers (cuda_runtime.h) were found: set CUDA_HOME"
    if why is not None:
        if _build._env_flag("XSEP_REQUIRE_NATIVE"):
            pytest.fail(f"XSEP_REQUIRE_NATIVE=1 but {why}")
        pytest.skip(why)
    error = _load_error(name)
    if error is not None:
        pytest.fail(f"the CUDA emulator build failed: {error}", pytrace=False)
    ops = getattr(torch.ops, name)
    ops.set_schedule_seed(zlib.crc32(test_id.encode()))
    ops.set_fence(FENCES[fence])
    return ops


if __name__ == "__main__":
    build = sys.argv[1] if len(sys.argv) > 1 else NAME
    load(build)
    print(f"built and loaded torch.ops.{build} from {build_directory(build)}")
