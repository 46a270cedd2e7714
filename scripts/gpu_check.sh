#!/usr/bin/env bash
# The GPU check, v2: one command that gets the most out of a short lease on a fresh GPU machine
# (torch with CUDA, Triton, nvcc, compute-sanitizer, ncu; no network; nothing prebuilt):
#
#   bash scripts/gpu_check.sh [OUT_DIR] [BUDGET_S] [--dry-run]
#
# OUT_DIR: default $XSEP_GPU_CHECK_OUT, else $OUT, else ./gpu-check. BUDGET_S: seconds for all steps
# (default $XSEP_GPU_CHECK_BUDGET, else 540). --dry-run (or XSEP_GPU_CHECK_DRY_RUN=1): run no step,
# write every output file as a real run would (for tests on machines without a GPU).
#
# Steps, most informative first; each gets the deadline min(its own cap, what is left of the budget),
# enforced with `timeout`. A step stopped at its deadline, or with too little budget left to start,
# is "not run (budget)", never "failed"; its partial log is kept. Steps that need the library are
# "not run (build failed)" when the build failed.
#   environment   device, capability, torch/triton/nvcc/driver versions, which tools exist
#   prebuilt      only with XSEP_LIBRARY=PATH (scripts/build_for_gpu_machine.sh made it, with PATH.sources):
#                 that library, if it was built from these sources and loads; then no build
#   build         the library (xsep._C, just-in-time with ninja) for this GPU's compute capability only,
#                 ptxas resource usage (registers, spills) in the log
#   then at once, in parallel (correctness only, nothing timed), XSEP_REQUIRE_CUDA=1 (a skip is a
#                 failure): tests/triton on the GPU; tests/cuda's GPU cases (-m cuda: CI runs their
#                 emulator twins); compute-sanitizer memcheck (PYTORCH_NO_CUDA_MEMORY_CACHING=1, so an
#                 access past a tensor is not hidden inside a cached block), racecheck, synccheck and
#                 initcheck on scripts/sanitizer_cases.py (every native op, forward and backward)
#   bench-layers  python -m xsep bench, native vs cuDNN, on 4 representative layers, verified at batch 128
#   profile       per-kernel times (torch.profiler) of one fused forward+backward per layer, native and torch
#   big-tensor    a bf16 depthwise forward on more than 2^31 elements, checked against torch on slices
#   ncu           SpeedOfLight, memory, occupancy, warp stalls, compute of the native kernels on 19x19 728->728
#   bench-full    python -m xsep bench: every layer, native and triton (Triton autotuning off), as time allows
#
# OUT_DIR receives at most 8 files, no folders (checked at the end, and said in the summary):
#   summary.md (the table, one row appended per step as it ends), results.json (environment, every
#   step's status, bench summaries, each native layer's measured time beside the emulator's
#   predicted time; rewritten after each step), bench.json and bench-full.json (the
#   bench's own JSON), profile.txt (per-kernel tables, ncu's report), logs.tar.gz (every step's full
#   log, rebuilt after each step). Exit status 1 if a step failed.
#
# Sourced (`source scripts/gpu_check.sh`) it only defines its functions (gc_init, gc_run, gc_record,
# gc_step, gc_finish), for tests.
# shellcheck disable=SC2016  # the single-quoted bash -c programs expand their own arguments

GC_FILES=(summary.md results.json bench.json bench-full.json profile.txt logs.tar.gz)
GC_MAX_FILES=8
GC_RESERVE=${GC_RESERVE:-10}    # seconds kept back for the final files
GC_MIN_STEP=${GC_MIN_STEP:-20}  # a step needs at least this much budget to start

gc_init() {  # gc_init OUT_DIR BUDGET_S [DRY_RUN]
  OUT_DIR=$1 BUDGET=$2 DRY_RUN=${3:-0}
  mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || return 1
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/xsep-gpu-check.XXXXXX") || return 1
  mkdir -p "$WORK/logs" "$WORK/status"
  : > "$WORK/steps.tsv"
  T0=$SECONDS FAILED=0 BUILD_OK=0
  PY=${PYTHON:-python3}
  GC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  printf '{"started": "%s", "budget_s": %d, "dry_run": %s, "out_dir": "%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$BUDGET" "$([ "$DRY_RUN" = 1 ] && echo true || echo false)" "$OUT_DIR" \
    > "$WORK/run.json"
  {
    echo "# xsep GPU check"
    echo
    echo "Started $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s$([ "$DRY_RUN" = 1 ] && echo ', DRY RUN (no step executed)')."
    echo "Full logs: logs.tar.gz; machine-readable: results.json."
    echo
    echo "| step | status | seconds | key numbers |"
    echo "|---|---|---|---|"
  } > "$OUT_DIR/summary.md"
}

gc_left() { echo $((BUDGET - (SECONDS - T0) - GC_RESERVE)); }

gc_set() {  # gc_set NAME STATUS SECONDS LIMIT RC NOTE: a step's outcome, in $WORK/status/NAME
  local note
  note=$(printf '%s' "$6" | tr -s ' \t\r\n' ' ')
  note=${note# } note=${note% }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:--}" "${note:0:300}" > "$WORK/status/$1"
}

gc_run() {  # gc_run NAME CAP KEY_REGEX COMMAND...: runs COMMAND within its deadline, logs to logs/NAME.log
  local name=$1 cap=$2 key=$3; shift 3
  local log=$WORK/logs/$name.log left limit t0 rc took note
  left=$(gc_left)
  limit=$((cap < left ? cap : left))
  if [ "$DRY_RUN" = 1 ]; then
    printf 'dry run: %s\n' "$*" > "$log"
    gc_set "$name" "not run (dry run)" 0 "$limit" "" "would run: $*"; return 0
  fi
  if [ "$limit" -lt "$GC_MIN_STEP" ]; then
    echo "not started: ${left}s of the budget left" > "$log"
    gc_set "$name" "not run (budget)" 0 "$limit" "" "${left}s of the budget left"; return 0
  fi
  t0=$SECONDS
  # SIGINT first: pytest then prints its report of what failed before the deadline (a SIGTERM lost it)
  timeout --signal=INT --kill-after=10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  took=$((SECONDS - t0))
  note=$( (grep -E -- "${key:-^\$^}" "$log" 2>/dev/null || true) | tail -n 4 | tr -s ' \t\r\n|' ' ')
  [ -n "$note" ] || note=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | tr -s ' \t\r|' ' ')
  if [ $rc -eq 0 ]; then
    gc_set "$name" passed "$took" "$limit" "$rc" "$note"
  elif { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && [ "$took" -ge "$limit" ]; then
    echo "== stopped at its ${limit}s deadline (budget); everything above was kept" >> "$log"
    gc_set "$name" "not run (budget)" "$took" "$limit" "$rc" "stopped at its ${limit}s deadline; partial log kept. $note"
  else
    gc_set "$name" failed "$took" "$limit" "$rc" "exit $rc: $note"
  fi
}

gc_skip() {  # gc_skip NAME WHY: a step that cannot run here (recorded as "not run (WHY)")
  echo "not run: $2" > "$WORK/logs/$1.log"
  gc_set "$1" "not run ($2)" 0 0 "" ""
}

gc_record() {  # gc_record NAME...: appends each step's outcome to the summary, results.json and logs.tar.gz
  local name status secs limit rc note
  for name in "$@"; do
    IFS=$'\t' read -r _ status secs limit rc note < "$WORK/status/$name"
    cat "$WORK/status/$name" >> "$WORK/steps.tsv"
    printf '| %s | %s | %s | %s |\n' "$name" "$status" "$secs" "${note//|/\\|}" >> "$OUT_DIR/summary.md"
    printf '== %-16s %-24s %4ss  %s\n' "$name" "$status" "$secs" "${note:0:160}"
    [ "$status" = failed ] && FAILED=1
  done
  "$PY" "$GC_ROOT/scripts/gpu_check_report.py" report "$WORK" "$OUT_DIR" || echo "(results.json not written)"
  tar -czf "$WORK/logs.tar.gz" -C "$WORK" logs && mv -f "$WORK/logs.tar.gz" "$OUT_DIR/logs.tar.gz"
}

gc_step() {  # gc_step NAME CAP KEY_REGEX COMMAND...: gc_run, then gc_record
  echo "== $1 (deadline $(( $2 < $(gc_left) ? $2 : $(gc_left) ))s): $(echo "${*:4}" | tr -s ' \n' ' ' | cut -c1-150)"
  gc_run "$@"
  gc_record "$1"
}

gc_finish() {  # gc_finish: the file check (at most 8 files, no folders in OUT_DIR); prints the summary
  local f extra=() count deepest
  while IFS= read -r f; do
    local known=0 g
    for g in "${GC_FILES[@]}"; do [ "$f" = "$g" ] && known=1; done
    [ "$known" = 1 ] || extra+=("$f")
  done < <(cd "$OUT_DIR" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
  if [ ${#extra[@]} -gt 0 ]; then  # not ours (e.g. left by an earlier run): kept inside logs.tar.gz
    mkdir -p "$WORK/logs/unexpected-in-out"
    for f in "${extra[@]}"; do mv "$OUT_DIR/$f" "$WORK/logs/unexpected-in-out/"; done
    tar -czf "$WORK/logs.tar.gz" -C "$WORK" logs && mv -f "$WORK/logs.tar.gz" "$OUT_DIR/logs.tar.gz"
  fi
  count=$(find "$OUT_DIR" -mindepth 1 | wc -l)
  deepest=$(cd "$OUT_DIR" && find . -mindepth 1 -printf '%d\n' | sort -n | tail -n 1)
  {
    echo
    echo "Finished after $((SECONDS - T0))s of a ${BUDGET}s budget."
    if [ "$count" -le "$GC_MAX_FILES" ] && [ "${deepest:-1}" -le 1 ]; then
      echo "Output check: $count files in OUT_DIR (limit $GC_MAX_FILES), no folders: ok."
    else
      echo "Output check FAILED: $count entries in OUT_DIR (limit $GC_MAX_FILES files), deepest level ${deepest}."
    fi
    [ ${#extra[@]} -eq 0 ] || echo "Moved into logs.tar.gz (unexpected-in-out/): ${extra[*]}"
  } >> "$OUT_DIR/summary.md"
  if [ "$count" -gt "$GC_MAX_FILES" ] || [ "${deepest:-1}" -gt 1 ]; then FAILED=1; fi
  echo
  cat "$OUT_DIR/summary.md"
  rm -rf "$WORK"
  return "$FAILED"
}

gc_main() {
  local dry=${XSEP_GPU_CHECK_DRY_RUN:-0} pos=()
  local a; for a in "$@"; do if [ "$a" = --dry-run ]; then dry=1; else pos+=("$a"); fi; done
  gc_init "${pos[0]:-${XSEP_GPU_CHECK_OUT:-${OUT:-gpu-check}}}" "${pos[1]:-${XSEP_GPU_CHECK_BUDGET:-540}}" "$dry" \
    || exit 2
  if [ -n "${XSEP_LIBRARY:-}" ]; then  # as an absolute path: the steps run from the checkout's root
    XSEP_LIBRARY=$(cd "$(dirname "$XSEP_LIBRARY")" 2> /dev/null && pwd)/$(basename "$XSEP_LIBRARY")
    export XSEP_LIBRARY
  fi
  cd "$GC_ROOT" || exit 2
  export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
  export XSEP_JIT=1                                   # build here, against this machine's torch (pins don't apply)
  export XSEP_BUILD_DIR=${XSEP_BUILD_DIR:-/tmp/xsep-gpu-build}
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  export XSEP_REQUIRE_NATIVE=1 XSEP_REQUIRE_CUDA=1 XSEP_FORCE_CUDA=1
  local layers=147:64:128,37:728:728,19:728:728,10:1536:2048 pytest_key='passed|failed|error|skipped|tests,'
  local san_key='ERROR SUMMARY|^ran |not run on'

  gc_step environment 60 '^device ' "$PY" scripts/gpu_check_report.py env "$WORK/env.json"
  local arch
  arch=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("capability") or "")' "$WORK/env.json" \
         2>/dev/null)
  [ -n "$arch" ] && export TORCH_CUDA_ARCH_LIST=$arch

  local load_check="
import time; t = time.time()
from xsep import _extension, backends
assert _extension.load(), _extension.load_error()
print('loaded in %.0fs:' % (time.time() - t), _extension.build_info())
for b in ('native', 'triton'):
    print(b, 'on cuda:', backends.unavailable_reason(b, 'cuda') or 'available')
"
  # A library built elsewhere for this machine's torch (scripts/build_for_gpu_machine.sh), named by
  # XSEP_LIBRARY: used when it was built from these very sources and loads; else the build below.
  if [ -n "${XSEP_LIBRARY:-}" ]; then
    if [ "$(cat "$XSEP_LIBRARY.sources" 2> /dev/null)" = "$("$PY" scripts/gpu_check_report.py sources)" ]; then
      gc_step prebuilt 60 'cuda_archs|available' "$PY" -c "$load_check"
      grep -q '^passed' "$WORK/status/prebuilt" && BUILD_OK=1
    else
      gc_skip prebuilt "built from other sources"; gc_record prebuilt
    fi
    [ "$BUILD_OK" = 1 ] || unset XSEP_LIBRARY
  fi
  if [ "$BUILD_OK" = 1 ] && [ "$DRY_RUN" != 1 ]; then
    gc_skip build "the prebuilt library loaded"; gc_record build
  else
    # NVCC_APPEND_FLAGS: ptxas prints each kernel's registers, shared memory and spills into the build log
    gc_step build 360 'cuda_archs|spill|available' env NVCC_APPEND_FLAGS="-Xptxas -v" XSEP_VERBOSE_BUILD=1 \
      "$PY" -c "$load_check"
    BUILD_OK=0
    if [ "$DRY_RUN" = 1 ] || grep -q '^passed' "$WORK/status/build"; then BUILD_OK=1; fi
    [ "$DRY_RUN" = 1 ] || grep -E 'bytes spill' "$WORK/logs/build.log" \
      | grep -v ' 0 bytes spill stores, 0 bytes spill loads' > "$WORK/logs/build-spills.log"
  fi

  # Correctness, in parallel (nothing here is timed; 16 cores): each step keeps its own deadline.
  # tests/triton needs no library, so it runs beside them (its Triton compiles use the spare cores).
  local correctness=(cuda-tests memcheck racecheck synccheck initcheck triton-tests) n
  # Triton compiles each case (about 3.5 s a test on the H200, one at a time): pytest-xdist, where the
  # machine has it, spreads them over 8 workers.
  local xdist=()
  "$PY" -c 'import xdist' 2> /dev/null && xdist=(-n 8)
  gc_run triton-tests 180 "$pytest_key" "$PY" -m pytest tests/triton -q -rfEs -p no:cacheprovider "${xdist[@]}" &
  if [ "$BUILD_OK" = 1 ]; then
    gc_run cuda-tests 180 "$pytest_key" bash -c '"$1" -m pytest tests/cuda -m cuda -q -rs -p no:cacheprovider --junitxml="$2"
      rc=$?; "$1" scripts/junit_no_skips.py "$2" || rc=1; exit $rc' _ "$PY" "$WORK/logs/cuda-tests.xml" &
    if command -v compute-sanitizer > /dev/null || [ "$DRY_RUN" = 1 ]; then
      for n in memcheck racecheck synccheck initcheck; do
        gc_run "$n" 180 "$san_key" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$n" \
          --error-exitcode 3 --print-limit 100 "$PY" scripts/sanitizer_cases.py --device cuda --backends native &
      done
    else
      for n in memcheck racecheck synccheck initcheck; do gc_skip "$n" "no compute-sanitizer"; done
    fi
  else
    for n in cuda-tests memcheck racecheck synccheck initcheck; do gc_skip "$n" "build failed"; done
  fi
  wait
  gc_record "${correctness[@]}"

  if [ "$BUILD_OK" = 1 ]; then
    gc_step bench-layers 200 'geometric mean|WRONG|results:' bash -c '"$1" -m xsep bench --device cuda --backends native \
      --layers "$2" --batch 128 --verify-batch 128 --out "$3/bench-layers"; rc=$?
      cp "$3"/bench-layers/*/*.json "$4/bench.json" 2>/dev/null; exit $rc' _ "$PY" "$layers" "$WORK" "$OUT_DIR"
    gc_step profile 90 ' total$' "$PY" scripts/profile_layers.py --device cuda --layers "$layers" \
      --backends native,torch --out "$OUT_DIR/profile.txt"
    gc_step big-tensor 90 '^ok|^WRONG|^skipped' "$PY" scripts/big_tensor_case.py --device cuda
    if command -v ncu > /dev/null || [ "$DRY_RUN" = 1 ]; then
      # Occupancy and warp stalls too: the H200 run's fused forward ran about 11x slower than the memory
      # counters' model predicted, with one block of 4 warps per SM (a latency question ncu answers).
      gc_step ncu 75 '==PROF==|==ERROR==|==WARNING==' bash -c 'ncu --clock-control none --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
        --kernel-name-base demangled --kernel-name regex:xsep --launch-count 12 \
        "$1" scripts/profile_layers.py --device cuda --layers 19:728:728 --backends native --plain > "$2/ncu.txt" 2>&1
        rc=$?; { echo "== ncu: 19x19 728->728, native, one fused forward+backward"; cat "$2/ncu.txt"; } >> "$3/profile.txt"
        cat "$2/ncu.txt"; exit $rc' _ "$PY" "$WORK/logs" "$OUT_DIR"
    else
      gc_skip ncu "no ncu"; gc_record ncu
    fi
  else
    for n in bench-layers profile big-tensor ncu; do gc_skip "$n" "build failed"; gc_record "$n"; done
  fi
  # The whole bench: every layer, native (if built) and triton; Triton autotuning off so it can fit.
  local all_backends=triton
  [ "$BUILD_OK" = 1 ] && all_backends=native,triton
  gc_step bench-full 600 'geometric mean|WRONG|results:' bash -c 'XSEP_TRITON_AUTOTUNE=0 "$1" -m xsep bench \
    --device cuda --backends "$4" --out "$2/bench-full"; rc=$?
    cp "$2"/bench-full/*/*.json "$3/bench-full.json" 2>/dev/null; exit $rc' _ "$PY" "$WORK" "$OUT_DIR" "$all_backends"
  gc_finish
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -uo pipefail
  gc_main "$@"
fi
