"""The repository's scripts (GPU check, sanitizer workload, README rendering) stay runnable even
where they cannot do their real job (no GPU here)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "gpu_check.sh")], check=True)


def test_sanitizer_workload_runs_on_cpu(native):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "sanitizer_cases.py"), "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "native/float32 (depthwise_conv2d, pointwise_conv2d, separable_conv2d)" in done.stdout
    assert "native/bfloat16" in done.stdout


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
