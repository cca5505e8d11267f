#!/usr/bin/env bash
# Builds everything (CUDA included when nvcc is found) and runs every test:
# the CTest suite (C++ library, CLI, SASS check; GPU tests skip without a GPU)
# and the Python package's pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS"
ctest --preset release -j "$JOBS"
# FLASHATTN_PY_CUDA=OFF builds the Python extension without the CUDA backends
# (CI sets it: the CUDA code was already compiled above, and a second CUDA build
# would double CI time). By default pip builds them when nvcc is present.
PIP_ARGS=(-q --disable-pip-version-check --no-build-isolation)
if [ -n "${FLASHATTN_PY_CUDA:-}" ]; then PIP_ARGS+=(-C "cmake.define.FLASHATTN_CUDA=${FLASHATTN_PY_CUDA}"); fi
python3 -m pip install "${PIP_ARGS[@]}" . 2>/dev/null || python3 -m pip install "${PIP_ARGS[@]}" --break-system-packages .
cd python/tests && python3 -m pytest -q -rs .
