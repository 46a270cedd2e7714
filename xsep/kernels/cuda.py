"""The hand-written CUDA kernels: every .cu file compiled to a cubin for sm_90 with the project's own
nvcc flags and include folders (xsep/_build.py) plus `-Xptxas -v`, then per kernel the ptxas
figures, the block size and the SASS counters.

Which instantiations: each launcher's `dispatch_dtype` (csrc/cuda/kernel_types.cuh) instantiates it
for float32, float64, float16 and bfloat16, and a launcher instantiates every kernel variant it may
pick at run time (vector width, kernel size, operand types), so the cubins hold every instantiation
a layer of any dtype can run. Each is labelled by its data type: the kernel's first template
argument, except the accumulator-type kernels below, which serve every dtype accumulating in it.

Compiled cubins are cached under the cache folder by a hash of the command, the compiler's version
and every source and header they may include.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
import subprocess
from dataclasses import dataclass

from xsep import _build
from xsep.kernels import occupancy as occ
from xsep.kernels import sass as sass_mod
from xsep.kernels import toolchain

ARCH = "sm_90"

# The data type of a template's first argument.
DTYPE_OF = {"c10::BFloat16": "bf16", "c10::Half": "f16", "float": "f32", "double": "f64"}
# Kernels templated on the accumulation type (Acc<T>: float for bf16/f16/f32, double for f64), which
# the launchers run for every data type accumulating in it: depthwise_grad_weight_nhwc's
# sum_chunks_kernel<A> and launch_ordered_sum<A> (gemm.cuh).
ACCUMULATOR_KERNELS = {"sum_chunks_kernel", "ordered_sum_kernel"}
SERVES = {"f32": ["bf16", "f16", "f32"], "f64": ["f64"]}
# Block sizes of kernels without __launch_bounds__ (the others: their launch bounds, which the
# launchers launch with): launch_ordered_sum in gemm.cuh launches 256 threads.
BLOCK_SIZES = {"ordered_sum_kernel": 256}
# Kernels launched with dynamic shared memory sized at run time (from the channel count):
# separable_forward_nhwc's resident kernels. Every other launcher passes 0 bytes.
DYNAMIC_SMEM = {"forward_resident_tc_kernel", "forward_resident_fma_kernel"}
# Bytes of 16-bit data per element (the tensor-core kernels' types).
ELEMENT_BYTES = {"bf16": 2, "f16": 2}


def gemm_tc_smem(short: str, dtype: str) -> int:
    """gemm_tc_kernel's dynamic shared memory, fixed by its template (TcTile in csrc/cuda/gemm.cuh):
    two stages of a 256-row A tile and a 128-row B tile, 32 deep, each [rows][32 + 8] or, for a
    k-major operand (StridedKMajor), [32][rows + 8]."""
    operands = [a.strip() for a in short[short.index("<") + 1:].split(",")[1:3]]

    def tile(rows: int, kind: str) -> int:
        return 32 * (rows + 8) if kind == "StridedKMajor" else rows * (32 + 8)

    return 2 * (tile(256, operands[0]) + tile(128, operands[1])) * ELEMENT_BYTES[dtype]


@dataclass
class Resources:
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    static_smem: int = 0


def parse_ptxas(log: str) -> dict[str, Resources]:
    """`ptxas -v` output -> resources per entry function (mangled name)."""
    result: dict[str, Resources] = {}
    entry = props = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            entry = m.group(1)
            result.setdefault(entry, Resources())
            continue
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            props = m.group(1)
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and props in result:
            r = result[props]
            r.stack, r.spill_stores, r.spill_loads = (int(g) for g in m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and entry in result:
            result[entry].registers = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            result[entry].static_smem = int(s.group(1)) if s else 0
    return result


def _strip_arguments(name: str) -> str:
    """'void f<a, b>(x, y)' -> 'f<a, b>'."""
    if name.startswith("void "):
        name = name[5:]
    depth = 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            return name[:i]
    return name


def short_name(demangled: str) -> str:
    """A readable kernel name: no namespaces, no argument list, dtypes as bf16/f16/f32/f64, the GEMM
    operands without the repeated data type (gemm_tc_kernel<bf16, Strided, Depthwise<8>, StoreOutput>)."""
    s = demangled.replace("(anonymous namespace)::", "")
    s = _strip_arguments(s.strip())
    s = re.sub(r"\b(?:xsep::cuda::|xsep::|c10::)", "", s)
    s = re.sub(r"\bBFloat16\b", "bf16", s)
    s = re.sub(r"\bHalf\b", "f16", s)
    s = re.sub(r"\bfloat\b", "f32", s)
    s = re.sub(r"\bdouble\b", "f64", s)
    s = re.sub(r"(\w+)Operand\b", r"\1", s)
    s = re.sub(r"\s+>", ">", s)
    m = re.match(r"(\w+)<(bf16|f16|f32|f64)\b", s)
    if m:  # an operand's own <T> (or leading T,) repeats the kernel's data type
        t = m.group(2)
        head, tail = s[:m.end()], s[m.end():]
        tail = re.sub(rf"<{t}>", "", tail)
        tail = re.sub(rf"<{t}, ", "<", tail)
        s = head + tail
    return s


def kernel_base(short: str) -> str:
    return short.split("<", 1)[0]


def dtype_of(demangled: str) -> str:
    s = _strip_arguments(demangled.replace("(anonymous namespace)::", ""))
    m = re.search(r"<\s*([\w:]+)", s)
    return DTYPE_OF.get(m.group(1), "?") if m else "?"


def _nvcc_command(src: str, out: str, generated_dir: str) -> list[str]:
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch
    from torch.utils import cpp_extension

    # include_dirs takes the generated headers' folder where xsep/_build.py generates headers
    if len(inspect.signature(_build.include_dirs).parameters) > 1:
        includes = _build.include_dirs(True, _build.generate_headers(generated_dir))
    else:
        includes = _build.include_dirs(True)
    torch_dir = os.path.dirname(torch.__file__)
    includes = includes + [os.path.join(torch_dir, "include"),
                           os.path.join(torch_dir, "include", "torch", "csrc", "api", "include")]
    flags = list(cpp_extension.COMMON_NVCC_FLAGS) + _build.nvcc_flags()
    return ([toolchain.nvcc() or "nvcc", "-cubin", f"-arch={ARCH}", "-Xptxas", "-v", "-std=c++17"] + flags
            + [f"-I{d}" for d in includes] + [src, "-o", out])


def _source_hash(command: list[str], nvcc_version: str, include_dirs: list[str]) -> str:
    h = hashlib.sha256()
    h.update("\0".join(command).encode())
    h.update(nvcc_version.encode())
    import torch

    h.update(torch.__version__.encode())
    for d in include_dirs:
        if not d.startswith(_build.ROOT):  # torch's and the CUDA wheels' headers: their versions
            continue
        _build.hash_files(sorted(os.path.join(root, f) for root, _, files in os.walk(d) for f in files
                                 if f.endswith((".h", ".cuh", ".hpp", ".inc", ".cu"))), h)
    return h.hexdigest()[:16]


def compile_source(src: str, cache_dir: str, log=print) -> tuple[str, str]:
    """Compiles one .cu file (path relative to the repository root) to a cubin in cache_dir, unless
    cached; returns (cubin path, ptxas log)."""
    stem = os.path.splitext(os.path.basename(src))[0]
    os.makedirs(cache_dir, exist_ok=True)
    command = _nvcc_command(os.path.join(_build.ROOT, src), "OUT", os.path.join(cache_dir, "generated"))
    includes = [a[2:] for a in command if a.startswith("-I")]
    key = _source_hash(command, toolchain.version(command[0]), includes)
    cubin, logfile = (os.path.join(cache_dir, f"{stem}-{key}{ext}") for ext in (".cubin", ".log"))
    if os.path.exists(cubin) and os.path.exists(logfile):
        with open(logfile, encoding="utf-8") as f:
            return cubin, f.read()
    command[-1] = cubin + ".tmp"
    log(f"kernels: nvcc -cubin -arch={ARCH} {src} ...")
    run = subprocess.run(command, capture_output=True, text=True, cwd=_build.ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"nvcc failed on {src}:\n{run.stderr[-4000:]}")
    os.replace(cubin + ".tmp", cubin)
    with open(logfile, "w", encoding="utf-8") as f:
        f.write(run.stderr + run.stdout)
    return cubin, run.stderr + run.stdout


def kernels_of(src: str, cubin: str, ptxas_log: str) -> list[dict]:
    """The report's records for every kernel of one compiled source."""
    resources = parse_ptxas(ptxas_log)
    sass = sass_mod.parse(toolchain.sass(cubin))
    bounds = toolchain.max_threads(cubin)
    names = toolchain.demangle(sorted(resources))
    records = []
    for mangled, res in resources.items():
        demangled = names.get(mangled, mangled)
        short = short_name(demangled)
        base = kernel_base(short)
        dtype = dtype_of(demangled)
        serves = SERVES.get(dtype, [dtype]) if base in ACCUMULATOR_KERNELS else [dtype]
        block = bounds.get(mangled) or BLOCK_SIZES.get(base)
        dynamic = "dynamic" if base in DYNAMIC_SMEM else 0
        if base == "gemm_tc_kernel":
            dynamic = gemm_tc_smem(short, dtype)
        smem = res.static_smem + (dynamic if isinstance(dynamic, int) else 0)
        o = occ.occupancy(block, res.registers, smem) if block else None
        fn = sass.get(mangled)
        records.append({
            "backend": "cuda", "source": src, "name": short, "mangled": mangled, "dtype": dtype,
            "serves": serves, "registers": res.registers, "spill_stores": res.spill_stores,
            "spill_loads": res.spill_loads, "stack": res.stack, "static_smem": res.static_smem,
            "dynamic_smem": dynamic, "block": block,
            "block_from": "launch bounds" if mangled in bounds else ("table" if block else None),
            "occupancy": o.to_dict() if o else None, "sass": fn.to_dict() if fn else None,
        })
    return sorted(records, key=lambda r: (r["name"]))


def code_hash() -> str:
    """A hash of the report's own code (xsep/kernels/*.py): cached results derived by older code
    are not reused."""
    here = os.path.dirname(os.path.abspath(__file__))
    return _build.hash_files(sorted(os.path.join(here, f) for f in os.listdir(here) if f.endswith(".py"))
                             ).hexdigest()[:8]


def report(cache_dir: str, log=print) -> tuple[list[dict], dict]:
    """Every kernel of every .cu file, and the tools' versions. The records of each cubin are cached
    next to it (their SASS takes a while to read)."""
    import json

    records = []
    for src in _build.cuda_sources():
        cubin, ptxas_log = compile_source(src, cache_dir, log)
        cached = f"{os.path.splitext(cubin)[0]}-{code_hash()}.json"
        if os.path.exists(cached):
            with open(cached, encoding="utf-8") as f:
                records += json.load(f)
            continue
        found = kernels_of(src, cubin, ptxas_log)
        with open(cached + ".tmp", "w", encoding="utf-8") as f:
            json.dump(found, f)
        os.replace(cached + ".tmp", cached)
        records += found
    versions = {"nvcc": toolchain.version(toolchain.nvcc()), "cuobjdump": toolchain.version(toolchain.cuobjdump()),
                "arch": ARCH}
    return records, versions
