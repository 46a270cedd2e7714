"""The GPU check's (scripts/gpu_check.sh) Python helpers:

    python scripts/gpu_check_report.py env ENV_JSON         what machine this is (imports torch and triton)
    python scripts/gpu_check_report.py report WORK OUT_DIR  (re)writes OUT_DIR/results.json (standard library only)
    python scripts/gpu_check_report.py sources              a hash of what the library is built from (a carried
                                                            library is used only when its hash matches)

`report` runs after every step, so results.json always holds every step finished so far: the
environment, each step's status, seconds, deadline, exit code and key numbers (from WORK/steps.tsv),
and the geometric-mean summaries of the bench files already in OUT_DIR (bench.json, bench-full.json;
their full contents stay in those files), and each measured native layer beside the time the CUDA
emulator's memory counters predicted for it (the newest
benchmarks/results/kernels/*_emu-counters.json, tests/cuda_emu/memory_counters.py): the model's
calibration, layer by layer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

STEP_FIELDS = ("name", "status", "seconds", "limit_s", "exit_code", "key")
BENCH_FILES = {"bench": "bench.json", "bench_full": "bench-full.json"}
COUNTERS = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "kernels"
DTYPES = {"bfloat16": "bf16", "float32": "fp32"}  # the bench's names -> the counters'
# (bench op, bench mode) -> the counters' paths whose predictions add up to it
PATHS = {("depthwise", "forward"): ("depthwise forward",),
         ("depthwise", "forward+backward"): ("depthwise forward", "depthwise backward"),
         ("separable", "forward"): ("fused forward",),
         ("separable", "forward+backward"): ("fused forward", "fused backward")}


def predicted_vs_measured(bench: dict, counters: dict) -> list[dict]:
    """Each native layer of `bench` that the counters predicted (same shape, dtype and batch;
    channels_last): measured seconds, predicted seconds, the floor, and measured / predicted."""
    predicted = {(r["layer"], r["dtype"]): r["paths"] for r in counters.get("results", [])}
    rows = []
    for r in bench.get("layers", []):
        paths = PATHS.get((r.get("op"), r.get("mode")))
        layer = f"{r.get('size')}x{r.get('size')} {r.get('in_channels')}->{r.get('out_channels')}"
        found = predicted.get((layer, DTYPES.get(r.get("dtype"))))
        if (paths is None or found is None or r.get("backend") != "native" or r.get("layout") != "channels_last"
                or r.get("batch") != counters.get("batch") or not all(p in found for p in paths)):
            continue
        seconds = sum(found[p]["predicted"] for p in paths)
        rows.append({"layer": layer, "op": r["op"], "mode": r["mode"], "dtype": r["dtype"],
                     "measured_s": r["seconds"], "predicted_s": seconds,
                     "floor_s": sum(found[p]["floor"] for p in paths),
                     "measured_over_predicted": r["seconds"] / seconds if seconds else None})
    return rows


def newest_counters(folder: Path = COUNTERS) -> tuple[str, dict] | None:
    files = sorted(folder.glob("*_emu-counters.json"))
    if not files:
        return None
    try:
        return files[-1].name, json.loads(files[-1].read_text())
    except (OSError, ValueError):
        return None


def _tool_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unusable: {exc}"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit {done.returncode}"


def environment() -> dict:
    import torch

    env: dict = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "python": sys.version.split()[0],
                 "cpus": os.cpu_count(), "cuda_available": torch.cuda.is_available()}
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception as exc:  # reported, not fatal: the Triton steps say why they fail
        env["triton"] = f"not importable: {type(exc).__name__}: {exc}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, capability="%d.%d" % (p.major, p.minor), memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count,
                   l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1))
    else:
        env.update(device=None, capability=None)
    env["nvcc"] = _tool_version(["nvcc", "--version"])
    env["compute_sanitizer"] = _tool_version(["compute-sanitizer", "--version"])
    env["ncu"] = _tool_version(["ncu", "--version"])
    env["driver"] = _tool_version(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return env


def read_steps(path: Path) -> list[dict]:
    steps = []
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                values = line.split("\t") + [""] * len(STEP_FIELDS)
                step = dict(zip(STEP_FIELDS, values))
                for k in ("seconds", "limit_s", "exit_code"):
                    step[k] = int(step[k]) if step[k].lstrip("-").isdigit() else None
                steps.append(step)
    return steps


def report(work: Path, out: Path) -> dict:
    def load(path: Path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    doc = {"schema": "xsep-gpu-check/2", "environment": load(work / "env.json") or {},
           "run": load(work / "run.json") or {}, "steps": read_steps(work / "steps.tsv")}
    for key, name in BENCH_FILES.items():
        bench = load(out / name)
        if bench is not None:
            doc[key] = {"file": name, "settings": bench.get("settings"), "device": bench.get("device"),
                        "summary": bench.get("summary"),
                        "failed_verification": sum(not r.get("verified", True) for r in bench.get("layers", []))}
            counters = newest_counters()
            if counters is not None:
                doc[key]["predicted_vs_measured"] = {"counters": counters[0],
                                                     "rows": predicted_vs_measured(bench, counters[1])}
    tmp = work / "results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.move(str(tmp), out / "results.json")
    return doc


def sources_hash(root: Path = COUNTERS.parent.parent.parent) -> str:
    """xsep/_build.py's library_sources_hash (loaded by path, as setup.py does: no torch needed)."""
    spec = importlib.util.spec_from_file_location("xsep_build", root / "xsep" / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.library_sources_hash()


def main(argv: list[str]) -> int:
    if argv == ["sources"]:
        print(sources_hash())
        return 0
    if len(argv) == 2 and argv[0] == "env":
        env = environment()
        Path(argv[1]).write_text(json.dumps(env, indent=1) + "\n")
        print(json.dumps(env, indent=1))
        print(f"device {env.get('device')} (compute capability {env.get('capability')}), torch {env['torch']} "
              f"(CUDA {env['torch_cuda']}), triton {env['triton']}")
        return 0
    if len(argv) == 3 and argv[0] == "report":
        report(Path(argv[1]), Path(argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
