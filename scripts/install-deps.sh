#!/usr/bin/env bash
# Installs what flashattn needs on a fresh Debian/Ubuntu machine (compilers and
# CMake are assumed; nvcc is optional: the CUDA backends build when it is found).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  cmake ninja-build g++ pkg-config \
  libhwy-dev libcli11-dev nlohmann-json3-dev libgtest-dev libopenblas-dev \
  python3 python3-pip >/dev/null
# Python side: the package's build backend and the test runner; numpy for tests.
# cuobjdump lets the SASS check run where the toolkit ships none; --dump-sass also needs
# nvdisasm. PyPI's oldest 13.x release of both is 13.2 (no 13.0); it reads nvcc 13.0 cubins.
PIP="python3 -m pip install -q --disable-pip-version-check"
$PIP numpy nanobind scikit-build-core pytest 2>/dev/null || $PIP --break-system-packages numpy nanobind scikit-build-core pytest
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  SASS_TOOLS="nvidia-cuda-cuobjdump==13.2.* nvidia-cuda-nvdisasm==13.2.*"
  $PIP $SASS_TOOLS 2>/dev/null || $PIP --break-system-packages $SASS_TOOLS || true
fi
