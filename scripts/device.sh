#!/usr/bin/env bash
# The one script for the GPU machine: builds (CMake + Ninja, all cores), runs the
# GPU test suite, the Python tests on CUDA tensors, a compute-sanitizer sample,
# and the benchmarks beside PyTorch SDPA; prints a short table last.
#   scripts/device.sh [build] [tests] [pytest] [sanitize] [bench] [cpubench]   (default: all)
# Logs and results go to $OUT (the device tool's folder) or /tmp/fa_out.
# The lent machine has no Highway, GoogleTest, pkg-config, CLI11 or nlohmann-json:
# copies travel in the git-ignored .devdeps/ and .clidev/ (name both in `carry`),
# made by scripts/make-device-deps.sh, which also says how to call the device tool.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-/tmp/fa_out}
mkdir -p "$OUT"
STEPS=${*:-all}
has() { [[ " $STEPS " == *" $1 "* || " $STEPS " == *" all "* ]]; }
JOBS=$(nproc)
DEPS=$ROOT/.devdeps
if ! command -v pkg-config >/dev/null && [ -x "$DEPS/bin/pkg-config" ]; then
  export PATH=$DEPS/bin:$PATH LD_LIBRARY_PATH=$DEPS/lib:${LD_LIBRARY_PATH:-}
fi
if ! pkg-config --exists libhwy 2>/dev/null && [ -d "$DEPS/hwy" ]; then
  export PKG_CONFIG_PATH=$DEPS/hwy/lib/pkgconfig LD_LIBRARY_PATH=$DEPS/hwy/lib:${LD_LIBRARY_PATH:-}
fi
PREFIXES=""
if [ -d "$ROOT/.clidev" ]; then PREFIXES="$ROOT/.clidev"; fi
if [ ! -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] && [ -d "$DEPS/googletest" ]; then
  if [ ! -f /tmp/gtest/lib/cmake/GTest/GTestConfig.cmake ]; then
    cmake -S "$DEPS/googletest" -B /tmp/gtest-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX=/tmp/gtest -DBUILD_GMOCK=OFF >/dev/null && cmake --build /tmp/gtest-build -j "$JOBS" >/dev/null \
      && cmake --install /tmp/gtest-build >/dev/null
  fi
  PREFIXES="$PREFIXES;/tmp/gtest"
fi
# Outside any carried folder: a later call that carries the tree again keeps it.
BUILD=${BUILD:-$ROOT/build-dev}
PYTHON=$(command -v python3)

if has build; then
  t0=$(date +%s)
  # sm_90 SASS only (plus sm_90a for the Hopper kernels) to keep the device build short.
  cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASHATTN_PORTABLE_ARCHS=90 -DFLASHATTN_SM80_ARCHS=90 \
    "-DCMAKE_PREFIX_PATH=$PREFIXES" >"$OUT/configure.log" 2>&1 \
    || { tail -30 "$OUT/configure.log"; exit 1; }
  cmake --build $BUILD -j "$JOBS" >"$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv,noheader

# The Python package, built as users build it (pip: static library inside the
# extension, its symbols hidden from torch's), sm_90 only, into a private folder.
PKG=/tmp/fa_pkg
if (has pytest || has bench || has cpubench) && [ ! -d $PKG/flashattn ]; then
  t0=$(date +%s)
  $PYTHON -m pip install -q --no-build-isolation --no-deps --target $PKG \
    -C cmake.define.FLASHATTN_PORTABLE_ARCHS=90 -C cmake.define.FLASHATTN_SM80_ARCHS=90 \
    -C build-dir=/tmp/fa-pybuild . >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
  echo "pip install: $(( $(date +%s) - t0 )) s"
fi
export PYTHONPATH=$PKG LD_LIBRARY_PATH=$BUILD/src:${LD_LIBRARY_PATH:-}

if has tests; then
  ctest --test-dir $BUILD -L gpu -j 8 --timeout 600 >"$OUT/ctest_gpu.log" 2>&1
  echo "ctest -L gpu: $(grep -E 'tests passed|tests failed' "$OUT/ctest_gpu.log" | tail -1)"
  grep -E "^\s+[0-9]+ - .*(Failed|Timeout|Exception)" "$OUT/ctest_gpu.log" | head -20
  # Each skipped test shows twice (its own line and ctest's closing list): count its own line.
  echo "gpu tests: $(grep -cE 'Test +#[0-9]+: .* Passed' "$OUT/ctest_gpu.log") passed, $(grep -c '\*\*\*Skipped' "$OUT/ctest_gpu.log") reported skipped"
  $BUILD/cli/flashattn run --backward 2>&1 | tail -14
fi
if has pytest; then
  (cd python/tests && PYTHONUNBUFFERED=1 $PYTHON -m pytest -q -rs -p no:cacheprovider . >"$OUT/pytest.log" 2>&1)
  echo "pytest (numpy, torch CPU and CUDA): $(tail -1 "$OUT/pytest.log")"
  grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -20
fi

if has sanitize; then
  for tool in memcheck racecheck synccheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 $BUILD/tests/gpu/test_forward \
      --gtest_filter='*_q17_k17_*:*varlen*' >"$OUT/san_fwd_$tool.log" 2>&1; r1=$?
    compute-sanitizer --tool $tool --error-exitcode 9 $BUILD/tests/gpu/test_sm90_forward \
      --gtest_filter='*varlen*:*Sm90Dispatch*' >"$OUT/san_sm90_$tool.log" 2>&1; r2=$?
    compute-sanitizer --tool $tool --error-exitcode 9 $BUILD/tests/gpu/test_backward \
      --gtest_filter='*MatchesReference/*bf16*varlen*causalBR*:*Determinism*' >"$OUT/san_bwd_$tool.log" 2>&1; r3=$?
    compute-sanitizer --tool $tool --error-exitcode 9 $BUILD/tests/gpu/test_sm90_backward \
      --gtest_filter='*MatchesReference/*_bf16_bshd_b2_q113_k203_h2_d64:*MatchesReference/*_bf16_bshd_varlen_37x50*:*MatchesReference/*_bf16_bshd_b2_q300_k300_h2_d128_causalBR:*Sm90BackwardDeterministic*/3_*' \
      >"$OUT/san_sm90bwd_$tool.log" 2>&1; r4=$?
    echo "compute-sanitizer $tool: forward exit $r1, sm90 exit $r2, backward exit $r3, sm90 backward exit $r4 (9 = errors found)"
  done
fi

if has bench; then
  # GPU: ours vs SDPA flash / cuDNN / efficient, fwd and bwd, the FlashAttention grid.
  PYTHONUNBUFFERED=1 $PYTHON -m flashattn.bench --device cuda --dims 64,128,256 --dtypes bf16,fp16 \
    --peers flash,cudnn,efficient --out "$OUT" --budget 0.25 >"$OUT/bench_gpu.txt" 2>"$OUT/bench_gpu.err"
  echo "bench exit $?"
  tail -5 "$OUT/bench_gpu.err"
  # fp32: the portable kernel against SDPA's efficient and math backends (anchors' shapes).
  PYTHONUNBUFFERED=1 $PYTHON -m flashattn.bench --device cuda --dims 64,128 --dtypes fp32 --seqlens 4096 \
    --directions fwd --peers efficient,math --out "$OUT/fp32" --no-plot --budget 0.25 >"$OUT/bench_gpu_fp32.txt" 2>&1
fi
if has cpubench; then
  $BUILD/cli/flashattn bench --preset cpu --device cpu --backward --json "$OUT/cpu_bench.json" >"$OUT/cpu_bench.txt" 2>&1
  # The issue's CPU problem (B=1, H=16, S=2048, D=128) against torch's CPU SDPA on the same cores.
  PYTHONUNBUFFERED=1 $PYTHON -m flashattn.bench --device cpu --dims 128 --seqlens 2048 --tokens 2048 \
    --dtypes fp32,bf16 --out "$OUT/cpu" >"$OUT/bench_cpu.txt" 2>&1
  cat "$OUT/cpu_bench.txt" "$OUT/bench_cpu.txt" | tail -30
fi
if has bench; then cat "$OUT/bench_gpu_fp32.txt" "$OUT/bench_gpu.txt"; fi
