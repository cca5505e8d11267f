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
python3 -m pip install -q --disable-pip-version-check --no-build-isolation . 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check --no-build-isolation --break-system-packages .
cd python/tests && python3 -m pytest -q -rs .
