#!/usr/bin/env bash
# On the GPU machine: build the CUDA forward tests and bench (CMake + Ninja, all
# cores, sm_90 only), run the GPU forward tests, compute-sanitizer on a few
# cases, the bench beside SDPA's flash and cuDNN, and print the table last.
#   scripts/gpu_forward.sh [tests|bench|sanitize|all]...   (default: all)
# Missing build deps (Highway, pkg-config, GoogleTest) are taken from .devdeps/
# when that folder was carried (see docs/perf/cuda_forward.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/fa_out}
mkdir -p "$OUT"
STEPS=${*:-all}
JOBS=$(nproc)
DEPS=$PWD/.devdeps
if ! command -v pkg-config >/dev/null && [ -x "$DEPS/bin/pkg-config" ]; then
  export PATH=$DEPS/bin:$PATH LD_LIBRARY_PATH=$DEPS/lib:${LD_LIBRARY_PATH:-}
fi
if ! pkg-config --exists libhwy 2>/dev/null && [ -d "$DEPS/hwy" ]; then
  export PKG_CONFIG_PATH=$DEPS/hwy/lib/pkgconfig LD_LIBRARY_PATH=$DEPS/hwy/lib:${LD_LIBRARY_PATH:-}
fi
PREFIX=""
if [ ! -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] && [ -d "$DEPS/googletest" ]; then
  cmake -S "$DEPS/googletest" -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX=/tmp/gtest -DBUILD_GMOCK=OFF >/dev/null && cmake --build /tmp/gtest-build -j "$JOBS" >/dev/null \
    && cmake --install /tmp/gtest-build >/dev/null
  PREFIX=-DCMAKE_PREFIX_PATH=/tmp/gtest
fi
cmake -S . -B build-dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHATTN_PORTABLE_ARCHS=90 -DFLASHATTN_SM80_ARCHS=90 \
  -DFLASHATTN_BUILD_PYTHON=OFF -DFLASHATTN_BUILD_CLI=OFF $PREFIX >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build build-dev -j "$JOBS" --target test_forward test_forward_api flashattn_gpu_bench >"$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
has() { [[ " $STEPS " == *" $1 "* || " $STEPS " == *" all "* ]]; }
if has tests; then
  ./build-dev/tests/gpu/test_forward_api 2>&1 | tee "$OUT/test_forward_api.log" | grep -E "^\[  (PASSED|FAILED|SKIPPED) |FAILED" | head -20
  ./build-dev/tests/gpu/test_forward 2>&1 | tee "$OUT/test_forward.log" | grep -E "^\[  (PASSED|FAILED) |FAILED" | head -40
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 ./build-dev/tests/gpu/test_forward \
      --gtest_filter='*_q17_k17_*:*varlen*' >"$OUT/sanitize_$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -c '^\[       OK' "$OUT/sanitize_$tool.log") tests ok); $(grep -E 'ERROR SUMMARY' "$OUT/sanitize_$tool.log" | tail -1)"
  done
fi
if has bench; then
  ./build-dev/tests/gpu/flashattn_gpu_bench portable >"$OUT/bench_portable.txt" 2>&1; cat "$OUT/bench_portable.txt"
  ./build-dev/tests/gpu/flashattn_gpu_bench sm80 >"$OUT/bench_ours.txt" 2>&1
  python3 tests/gpu/bench_peers.py "$OUT/bench_ours.txt" >"$OUT/bench_table.md" 2>&1
  cat "$OUT/bench_table.md"
fi
