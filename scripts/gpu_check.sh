#!/usr/bin/env bash
# The GPU check: one command, well under 10 minutes, on a fresh GPU machine (torch with CUDA, Triton,
# nvcc, compute-sanitizer; no network needed):
#
#   bash scripts/gpu_check.sh [OUTPUT_DIR]        (default: $XSEP_GPU_CHECK_OUT, else $OUT, else ./gpu-check)
#
# 1. builds the library for this GPU's architecture only (just-in-time build, ninja)
# 2. runs the CUDA and Triton-on-GPU tests with nothing skipped (XSEP_REQUIRE_CUDA=1, and the run fails
#    if pytest reports any skip)
# 3. `python -m xsep bench`: copy bandwidth and matmul rate, every backend verified and timed against
#    cuDNN on Xception's layers (bf16, channels_last, batch 128)
# 4. compute-sanitizer memcheck on small cases of every CUDA op and backend; depthwise and separable
#    in NCHW against PyTorch's native NCHW path; racecheck; the whole model against timm's (eager)
# 5. prints a short table last. Logs and JSON go to OUTPUT_DIR; the exit status is 1 if any step
#    failed. The steps share one time budget (XSEP_GPU_CHECK_BUDGET, default 560 s), most valuable first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${XSEP_GPU_CHECK_OUT:-${OUT:-gpu-check}}}
mkdir -p "$OUT_DIR/logs"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export XSEP_JIT=1                                   # build here, against this machine's torch
export XSEP_BUILD_DIR=${XSEP_BUILD_DIR:-/tmp/xsep-gpu-build}
export MAX_JOBS=${MAX_JOBS:-16}
export XSEP_REQUIRE_NATIVE=1 XSEP_REQUIRE_CUDA=1
BUDGET=${XSEP_GPU_CHECK_BUDGET:-560}                # seconds for all steps; later steps shrink or are skipped
STATUS=()
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...: run, log to logs/NAME.log, remember the outcome
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS - 5))
  if [ $left -lt 20 ]; then
    STATUS+=("$(printf '%-22s NOT RUN (out of time: raise XSEP_GPU_CHECK_BUDGET)' "$name")"); failed=1; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/logs/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - t0))
  tail -n 5 "$OUT_DIR/logs/$name.log" | sed 's/^/   | /'
  if [ $rc -eq 0 ]; then STATUS+=("$(printf '%-22s ok      %4ss' "$name" "$took")")
  else STATUS+=("$(printf '%-22s FAILED  %4ss  (exit %s, logs/%s.log)' "$name" "$took" "$rc" "$name")"); failed=1; fi
  return $rc
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
  nvcc --version | tail -n 2
} > "$OUT_DIR/logs/environment.log" 2>&1
cat "$OUT_DIR/logs/environment.log"
TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
export TORCH_CUDA_ARCH_LIST
echo "building for compute capability $TORCH_CUDA_ARCH_LIST only"

step build 300 "$PY" -c "
from xsep import _extension, backends
assert _extension.load(), _extension.load_error()
print(_extension.build_info())
for b in ('native', 'triton'):
    print(b, 'on cuda:', backends.unavailable_reason(b, 'cuda') or 'available')
"
# the native CUDA kernels' tests, and the Triton tests (which run on CUDA tensors where a GPU is visible)
step cuda-tests 240 "$PY" -m pytest tests/cuda tests/triton -q -rs --junitxml="$OUT_DIR/logs/cuda-tests.xml" \
  && step cuda-tests-no-skips 30 "$PY" scripts/junit_no_skips.py "$OUT_DIR/logs/cuda-tests.xml"
# Triton autotuning compiles and times every configuration for every layer shape: the main run
# uses each kernel's first configuration so it always fits; an autotuned run on 3 layers comes last.
step bench 300 env XSEP_TRITON_AUTOTUNE=0 "$PY" -m xsep bench --device cuda --out "$OUT_DIR/bench"
if command -v compute-sanitizer > /dev/null; then
  step sanitizer-memcheck 240 compute-sanitizer --tool memcheck --error-exitcode 3 "$PY" scripts/sanitizer_cases.py --device cuda
else
  STATUS+=("sanitizer              FAILED  (compute-sanitizer not on PATH)"); failed=1
fi
step bench-nchw 120 env XSEP_TRITON_AUTOTUNE=0 "$PY" -m xsep bench --device cuda --layout nchw --ops depthwise,separable --out "$OUT_DIR/bench"
command -v compute-sanitizer > /dev/null && \
  step sanitizer-racecheck 240 compute-sanitizer --tool racecheck --error-exitcode 3 "$PY" scripts/sanitizer_cases.py --device cuda
step bench-autotuned 150 "$PY" -m xsep bench --device cuda --quick --backends triton --out "$OUT_DIR/bench-autotuned"
step bench-model 120 env XSEP_TRITON_AUTOTUNE=0 "$PY" -m xsep bench --device cuda --model xception --backends triton \
  --no-compile --out "$OUT_DIR/bench"
step bench-model-native 90 "$PY" -m xsep bench --device cuda --model xception --backends native --no-compile \
  --out "$OUT_DIR/bench"

echo
echo "== summary ($OUT_DIR)"
grep -h -E "geometric mean|^(xsep|timm)" "$OUT_DIR"/logs/bench*.log 2>/dev/null | sed 's/^/  /'
printf '  %s\n' "${STATUS[@]}"
exit $failed
