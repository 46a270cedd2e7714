"""The Triton kernels: each compiled for sm_90 without a GPU, exactly as the tests do it
(tests/triton/compile_for_gpu.py: the kernels of xsep/triton with their first autotuning
configuration, channels_last strides, 16-byte aligned pointers), then ptxas's figures and the SASS
counters of its cubin.

Run in a subprocess (`python -m xsep.kernels.triton_kernels --dtypes bf16,f32`, JSON on stdout):
the kernels must be defined for the compiler, not for TRITON_INTERPRET's interpreter, and this
process may have imported them either way. `report()` does that and caches the result by a hash of
the Triton sources and Triton's version.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile

from xsep import _build

COMPILE_SCRIPT = os.path.join(_build.ROOT, "tests", "triton", "compile_for_gpu.py")
TRITON_DIR = os.path.join(_build.ROOT, "xsep", "triton")
ARCH = 90


def _compile_script():
    spec = importlib.util.spec_from_file_location("xsep_compile_for_gpu", COMPILE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ptxas_log(compiled, captured: str) -> str:
    """ptxas -v output of this kernel: what Triton printed (TRITON_DUMP_PTXAS_LOG), else ptxas run
    again on its PTX with Triton's ptxas."""
    if "Used" in captured:
        return captured
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "k.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        run = subprocess.run([knobs.nvidia.ptxas.path, "-v", "--regAllocOptLevel=2", f"--gpu-name=sm_{ARCH}a", ptx,
                              "-o", os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    return run.stderr + run.stdout


def collect(dtypes: list[str]) -> list[dict]:
    """The records of every Triton kernel in these dtypes (in this process: no TRITON_INTERPRET)."""
    from triton import knobs

    from xsep.kernels import cuda, occupancy, sass, toolchain

    knobs.nvidia.dump_ptxas_log = True
    knobs.compilation.always_compile = True  # so that ptxas runs (and logs) even when Triton cached it
    cfg = _compile_script()
    records = []
    for dtype in dtypes:
        for kernel, pointers, partials, constexprs, _uses_dot in cfg._jobs(cfg.DTYPES[dtype]):
            config = kernel.xsep_plain_config
            fn = kernel.xsep_plain.fn
            captured = io.StringIO()
            with contextlib.redirect_stdout(captured):
                compiled = cfg._compile(kernel, pointers, partials, constexprs, config, cfg.DTYPES[dtype], ARCH)
            res = next(iter(cuda.parse_ptxas(_ptxas_log(compiled, captured.getvalue())).values()), cuda.Resources())
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "k.cubin")
                with open(path, "wb") as f:
                    f.write(compiled.asm["cubin"])
                functions = sass.parse(toolchain.sass(path))
            fs = functions.get(compiled.metadata.name) or next(iter(functions.values()), None)
            block = compiled.metadata.num_warps * 32
            shared = int(compiled.metadata.shared)
            o = occupancy.occupancy(block, res.registers, shared + res.static_smem)
            records.append({
                "backend": "triton", "source": os.path.relpath(fn.__code__.co_filename, _build.ROOT),
                "name": f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}", "mangled": compiled.metadata.name,
                "dtype": dtype, "serves": [dtype], "config": {k: v for k, v in config.items()},
                "registers": res.registers, "spill_stores": res.spill_stores, "spill_loads": res.spill_loads,
                "stack": res.stack, "static_smem": res.static_smem, "dynamic_smem": shared, "block": block,
                "block_from": "num_warps", "occupancy": o.to_dict(), "sass": fs.to_dict() if fs else None,
            })
    return records


def _hash(dtypes: list[str]) -> str:
    import triton

    h = hashlib.sha256((",".join(dtypes) + triton.__version__).encode())
    paths = [COMPILE_SCRIPT] + sorted(os.path.join(TRITON_DIR, f) for f in os.listdir(TRITON_DIR) if f.endswith(".py"))
    _build.hash_files(paths, h)
    from xsep.kernels import cuda

    return h.hexdigest()[:16] + "-" + cuda.code_hash()


def available() -> str | None:
    """None when the Triton kernels can be compiled here, else why not."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        return "Triton's CUDA backend is not installed"
    if not os.path.exists(COMPILE_SCRIPT):
        return f"{os.path.relpath(COMPILE_SCRIPT, _build.ROOT)} is missing (a source checkout is needed)"
    return None


def report(cache_dir: str, dtypes: list[str], log=print) -> tuple[list[dict], dict]:
    """Every Triton kernel in these dtypes (cached), and Triton's version."""
    import triton

    versions = {"triton": triton.__version__, "arch": f"sm_{ARCH}a"}
    os.makedirs(cache_dir, exist_ok=True)
    cached = os.path.join(cache_dir, f"triton-{_hash(dtypes)}.json")
    if os.path.exists(cached):
        with open(cached, encoding="utf-8") as f:
            return json.load(f), versions
    log(f"kernels: compiling the Triton kernels for sm_{ARCH} ({','.join(dtypes)}) ...")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([_build.ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    run = subprocess.run([sys.executable, "-m", "xsep.kernels.triton_kernels", "--dtypes", ",".join(dtypes)],
                         env=env, capture_output=True, text=True, cwd=_build.ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"compiling the Triton kernels failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    records = json.loads(run.stdout)
    with open(cached + ".tmp", "w", encoding="utf-8") as f:
        json.dump(records, f)
    os.replace(cached + ".tmp", cached)
    return records, versions


def main() -> int:
    parser = argparse.ArgumentParser(description="the Triton kernels' records as JSON")
    parser.add_argument("--dtypes", default="bf16,f32")
    args = parser.parse_args()
    records = collect(args.dtypes.split(","))
    sys.stdout.write(json.dumps(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
