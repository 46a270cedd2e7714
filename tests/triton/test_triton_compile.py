"""Without a GPU, the interpreter cannot tell whether Triton's compiler accepts the kernels: compile
each one for Hopper (sm_90; bfloat16, float32 and float64, each in the configuration launch() runs
first) in a subprocess without TRITON_INTERPRET, down to a cubin, and check that the 16-bit GEMM
kernels use tensor cores (wgmma) and that no kernel asks for more shared memory than sm_90 has (the
float64 GEMMs in float32's tiles did: 256 KiB, the likely cause of their failures on an H200)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("compile_for_gpu.py")
ROOT = Path(__file__).resolve().parents[2]


def test_kernels_compile_for_hopper():
    # (on a GPU machine too: cheap, and the GPU check allows no skips)
    pytest.importorskip("triton.backends.nvidia", reason="Triton's CUDA backend (ptxas) is needed to compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    run = subprocess.run([sys.executable, str(SCRIPT), "--arch", "90", "--dtypes", "bf16,f32,f64"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
