#!/usr/bin/env bash
# Builds xsep's library here, for the GPU machine: against that machine's torch (default 2.11.0, the
# CUDA 13.0 build from the package registry) for sm_90 only, into build/gpu-machine/xsep_C.so, with
# build/gpu-machine/xsep_C.so.sources (scripts/gpu_check_report.py sources: the hash of what it was
# built from). scripts/gpu_check.sh there loads it (XSEP_LIBRARY) instead of spending about 150 s of
# the lease compiling, and builds as before when the hash differs or the library does not load.
#
#   bash scripts/build_for_gpu_machine.sh [TORCH_VERSION]     (about 7 minutes on 2 cores)
#
# Then, with the device tool: carry ["build/gpu-machine"] and run
#   XSEP_LIBRARY=build/gpu-machine/xsep_C.so bash scripts/gpu_check.sh "$OUT" 555
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-2.11.0}
venv=${XSEP_GPU_VENV:-/tmp/xsep-torch-$version}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "torch==$version" ninja "setuptools>=64" numpy
out=build/gpu-machine  # only the library and its hash: the carried folder stays about 20 MB
jit=${TMPDIR:-/tmp}/xsep-gpu-machine-build-$version
mkdir -p "$out"
rm -f "$out/xsep_C.so" "$out/xsep_C.so.sources"
XSEP_JIT=1 XSEP_BUILD_DIR="$jit" TORCH_CUDA_ARCH_LIST=9.0 XSEP_FORCE_CUDA=1 PYTHONPATH="$PWD" \
  "$venv/bin/python" -c "
from xsep import _extension
assert _extension.load(), _extension.load_error()
print(_extension.build_info())"
cp "$jit/xsep_C.so" "$out/xsep_C.so"
python3 scripts/gpu_check_report.py sources > "$out/xsep_C.so.sources"
echo "$out/xsep_C.so: torch $version, sm_90, sources $(cut -c1-12 "$out/xsep_C.so.sources")" \
     "($(git rev-parse --short HEAD)$(git diff --quiet -- csrc xsep/_build.py xsep/ops/schemas.py || echo ' + uncommitted changes'))"
