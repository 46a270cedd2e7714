"""The command-line tools the report needs: nvcc (the CUDA toolkit), cuobjdump (the toolkit's, else
the copy Triton's wheel ships) and c++filt (binutils) for demangling."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from xsep import _build


def nvcc() -> str | None:
    home = _build.find_cuda_home()
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _triton_bin(tool: str) -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", tool)
    return path if os.access(path, os.X_OK) else None


def cuobjdump() -> str | None:
    home = _build.find_cuda_home()
    for path in ([os.path.join(home, "bin", "cuobjdump")] if home else []) + [shutil.which("cuobjdump")]:
        if path and os.access(path, os.X_OK):
            return path
    return _triton_bin("cuobjdump")


def version(tool: str | None) -> str:
    """The 'release x.y, Vx.y.z' part of a CUDA tool's --version, or '?'."""
    if tool is None:
        return "?"
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    m = re.search(r"V(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1] if out.strip() else "?"


def demangle(names: list[str]) -> dict[str, str]:
    """Mangled -> demangled (itself where c++filt is missing or declines)."""
    result = {n: n for n in names}
    tool = shutil.which("c++filt")
    if tool is None or not names:
        return result
    try:
        out = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True,
                             timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return result
    if len(out) == len(names):
        result.update(zip(names, out))
    return result


def sass(cubin: str) -> str:
    """`cuobjdump -sass` of a cubin file."""
    tool = cuobjdump()
    if tool is None:
        raise RuntimeError("no cuobjdump (neither the CUDA toolkit's nor Triton's)")
    return subprocess.run([tool, "-sass", cubin], capture_output=True, text=True, check=True, timeout=600).stdout


def max_threads(cubin: str) -> dict[str, int]:
    """Each kernel's __launch_bounds__ (EIATTR_MAX_THREADS, x*y*z) from `cuobjdump -elf`: the block
    size the launchers use (they launch with the same constants)."""
    tool = cuobjdump()
    if tool is None:
        return {}
    text = subprocess.run([tool, "-elf", cubin], capture_output=True, text=True, check=True, timeout=600).stdout
    result: dict[str, int] = {}
    current = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\.nv\.info\.(\S+)", line)
        if m:
            current = m.group(1)
            continue
        if current and "EIATTR_MAX_THREADS" in line:
            for follow in lines[i + 1:i + 4]:
                v = re.search(r"Value:\s*((?:0x[0-9a-fA-F]+\s*)+)", follow)
                if v:
                    dims = [int(x, 16) for x in v.group(1).split()]
                    n = 1
                    for d in dims:
                        n *= d
                    result[current] = n
                    break
    return result
