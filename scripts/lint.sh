#!/usr/bin/env bash
# Lint: ruff for Python (configured in pyproject.toml) and clang-format for C++/CUDA (.clang-format),
# at the versions pinned in pyproject.toml's `lint` extra (pip install -e ".[lint]"). Checks only;
# `ruff check --fix .` and `clang-format -i FILE` apply the fixes.
set -euo pipefail
cd "$(dirname "$0")/.."

ruff check .
git ls-files -- 'csrc/*.cpp' 'csrc/*.h' 'csrc/*.cu' 'csrc/*.cuh' \
  'tests/cuda_emu/*.cpp' 'tests/cuda_emu/*.h' 'tests/cuda_emu/*.cu' \
  | xargs clang-format --dry-run --Werror
echo "lint: clean"
