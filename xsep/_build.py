"""What the xsep._C library is built from, shared by setup.py (ahead of time) and the
just-in-time build in xsep/_extension.py, so the two can never disagree.

Knobs (environment variables):
  XSEP_FORCE_CUDA=1   fail if the CUDA sources cannot be built
  XSEP_SKIP_CUDA=1    build the CPU kernels only
  TORCH_CUDA_ARCH_LIST  CUDA architectures (default: "8.0;9.0")
  MAX_JOBS            parallel compile jobs (default: from cores and memory)
  CUDA_HOME           the CUDA toolkit; found from `nvcc` when unset

The C++ side of the ops' contract (schemas, activation codes) is generated from xsep/ops/schemas.py
into a header, xsep_contract.h, in a build folder (generate_headers), so that it is written once.

Importing this module must stay cheap and torch-free: setup.py loads it by path.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def _rel(paths: list[str]) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in paths)


CUDA_DIR = os.path.join(CSRC, "cuda")


def cpp_sources(with_cuda: bool = False) -> list[str]:
    """The C++ sources, relative to the repository root; the CUDA ops' host code (csrc/cuda/*.cpp,
    which includes CUDA headers) only when building CUDA."""
    paths = glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True)
    return _rel([p for p in paths if with_cuda or not p.startswith(CUDA_DIR + os.sep)])


def cuda_sources() -> list[str]:
    return _rel(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))


def sources(with_cuda: bool) -> list[str]:
    """Everything compiled into xsep._C."""
    return cpp_sources(with_cuda) + (cuda_sources() if with_cuda else [])


def hash_files(paths, h=None):
    """A sha256 (`h`, or a new one) updated with each file's name (relative to the checkout where
    inside it) and content: how caches of things built from files tell that the files changed."""
    h = h if h is not None else hashlib.sha256()
    for path in paths:
        path = os.fspath(path)
        name = os.path.relpath(path, ROOT) if os.path.abspath(path).startswith(ROOT + os.sep) else path
        with open(path, "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h


def library_sources_hash() -> str:
    """The hash of what the library is built from: csrc/ and the Python files the build reads (this
    file: flags; the schemas: the generated contract header). A library built elsewhere is used only
    when its hash matches (scripts/build_for_gpu_machine.sh, scripts/gpu_check.sh)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(CSRC) for f in fs)
    return hash_files(files + [os.path.join(ROOT, "xsep", "_build.py"),
                               os.path.join(ROOT, "xsep", "ops", "schemas.py")]).hexdigest()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder. torch guesses it from `which nvcc`, which is wrong when nvcc is a
    wrapper script outside the toolkit; nvcc's own dry run names its real folder."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return "/usr/local/cuda" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "x.cu", "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        ).stderr
    except (OSError, subprocess.SubprocessError):
        out = ""
    m = re.search(r"^#\$ TOP=(.+)$", out, re.MULTILINE)
    if m:
        return os.path.realpath(m.group(1).strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def cuda_build_decision() -> tuple[bool, str]:
    """(build CUDA?, why). Decided by toolkit + CUDA-enabled torch, never by whether a GPU is
    present: CI compile-checks the CUDA code on a machine without one."""
    import torch  # only when building

    if _env_flag("XSEP_SKIP_CUDA"):
        return False, "XSEP_SKIP_CUDA is set"
    reasons = []
    if not cuda_sources():
        reasons.append("there are no CUDA sources")
    if torch.version.cuda is None:
        reasons.append(f"torch {torch.__version__} is not a CUDA build")
    cuda_home = find_cuda_home()
    if cuda_home is None or not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        reasons.append("no CUDA toolkit (nvcc) was found; set CUDA_HOME")
    if reasons:
        if _env_flag("XSEP_FORCE_CUDA"):
            raise RuntimeError("XSEP_FORCE_CUDA is set but CUDA cannot be built: " + "; ".join(reasons))
        return False, "; ".join(reasons)
    return True, f"CUDA {torch.version.cuda} toolkit at {cuda_home}"


def cuda_arch_list() -> str:
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS


def prepare_cuda_env() -> None:
    """Point torch's extension builder at the real toolkit and the archs we want."""
    cuda_home = find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
        if "torch.utils.cpp_extension" in sys.modules:  # already computed its CUDA_HOME
            sys.modules["torch.utils.cpp_extension"].CUDA_HOME = cuda_home
    os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()


CONTRACT_HEADER = "xsep_contract.h"


def _schemas_module():
    """xsep/ops/schemas.py, loaded by path: importing the xsep package would import torch."""
    spec = importlib.util.spec_from_file_location("xsep_schemas", os.path.join(ROOT, "xsep", "ops", "schemas.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def contract_header() -> str:
    """The text of xsep_contract.h: the Activation enum (a name's code is its position in
    ACTIVATIONS), the activation names, and every op's schema for csrc/xsep.cpp to register. Plain
    C++ with no includes, so that nvcc-compiled kernels can use it too."""
    s = _schemas_module()
    assert s.ACTIVATIONS[:len(s.INPUT_ACTIVATIONS)] == s.INPUT_ACTIVATIONS, "input activations come first"
    enumerators = ", ".join(f"{name} = {code}" for code, name in enumerate(s.ACTIVATIONS))
    names = ", ".join(json.dumps(name) for name in s.ACTIVATIONS)  # a JSON string is a C string literal here
    schemas = "".join(f"    {json.dumps(name + schema)},\n" for name, schema in s.SCHEMAS.items())
    return (
        "// Generated by xsep/_build.py from xsep/ops/schemas.py: do not edit.\n"
        "#pragma once\n\n"
        "namespace xsep {\n\n"
        f"enum class Activation : int {{ {enumerators} }};\n"
        f"inline constexpr const char* kActivationNames[] = {{{names}}};\n"
        "// Activations applied to the input as it is loaded: the first ones of kActivationNames.\n"
        f"inline constexpr int kInputActivations = {len(s.INPUT_ACTIVATIONS)};\n\n"
        f"inline constexpr const char* kSchemas[] = {{\n{schemas}}};\n\n"
        "}  // namespace xsep\n"
    )


def write_if_changed(path: str, text: str) -> None:
    """Writes a generated file only when its text changed: ninja rebuilds by modification time."""
    if os.path.exists(path) and open(path, encoding="utf-8").read() == text:
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def generate_headers(directory: str) -> str:
    """Writes xsep_contract.h into `directory` and returns `directory`, to go on the include path."""
    os.makedirs(directory, exist_ok=True)
    write_if_changed(os.path.join(directory, CONTRACT_HEADER), contract_header())
    return directory


def include_dirs(with_cuda: bool, generated: str) -> list[str]:
    """csrc/, the folder generate_headers wrote to, and for CUDA the CUDA wheels' headers."""
    dirs = [CSRC, generated]
    if with_cuda:
        # The CUDA wheels' headers (cusparse.h and friends), which torch's CUDA headers include.
        import torch

        site = os.path.dirname(os.path.dirname(torch.__file__))
        dirs += sorted(glob.glob(os.path.join(site, "nvidia", "cu[0-9]*", "include")))
    return dirs


def _defines(with_cuda: bool) -> list[str]:
    flags = [f"-DXSEP_WITH_CUDA={1 if with_cuda else 0}"]
    if with_cuda:
        # A bare token (no quotes or ';' to survive shells and ninja), stringified in csrc/xsep.cpp.
        archs = re.sub(r"[;\s]+", "_", cuda_arch_list().strip())
        flags.append(f"-DXSEP_CUDA_ARCHS={archs}")
    return flags


def cxx_flags(with_cuda: bool) -> list[str]:
    # -fopenmp: at::parallel_for is inline in torch's headers and runs serially without it.
    # -fno-tree-loop-distribute-patterns: short zero-fill and copy loops in the CPU kernels (the
    # padding columns of a row buffer, a few values) stay loops instead of becoming memset/memcpy
    # library calls (510 memset call sites in the AVX2 kernels' object before).
    return ["-O3", "-fno-math-errno", "-fno-tree-loop-distribute-patterns", "-fopenmp"] + _defines(with_cuda)


def link_flags() -> list[str]:
    # -fopenmp: the same libgomp torch itself loads. torch_python: the module's functions
    # (csrc/module_calls.cpp) read and return tensors as Python objects; setup.py's CppExtension
    # links it anyway, the just-in-time build (a library, not a module, for torch) only when told.
    return ["-fopenmp", "-ltorch_python"]


def nvcc_flags() -> list[str]:
    return ["-O3", "--expt-relaxed-constexpr", "-lineinfo", "-Xcompiler", "-fopenmp"] + _defines(True)


def max_jobs() -> int:
    """Parallel compile jobs: one per core, at most one per 3 GiB of memory (nvcc is hungry)."""
    if os.environ.get("MAX_JOBS"):
        return int(os.environ["MAX_JOBS"])
    cores = os.cpu_count() or 1
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8
    return max(1, min(cores, int(mem_gib // 3)))
