#!/usr/bin/env bash
# One device call after v4's switches became the defaults (docs/perf/cuda_backward.md):
# build, test_sm90_backward and test_backward, racecheck on two D = 256 cases, our
# gtest bench, and the integrated bench (python -m flashattn.bench: ours, SDPA flash,
# SDPA cuDNN in one run) on the backward cells of head dims 64/128/256 at S = 512-2k.
# Usage (device, copied tree): OUT=$OUT BUILD=/tmp/build-x bash docs/perf/cuda_backward_v4_check.sh
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
BUILD=${BUILD:-/tmp/build-v4}
OUT=${OUT:-/tmp/out-v4}
L=/tmp/v4logs; mkdir -p "$OUT" $L
# The dependency paths scripts/device.sh sets up, for the pip build started here.
DEPS=$PWD/.devdeps
if ! command -v pkg-config >/dev/null && [ -x "$DEPS/bin/pkg-config" ]; then
  export PATH=$DEPS/bin:$PATH LD_LIBRARY_PATH=$DEPS/lib:${LD_LIBRARY_PATH:-}
fi
if ! pkg-config --exists libhwy 2>/dev/null && [ -d "$DEPS/hwy" ]; then
  export PKG_CONFIG_PATH=$DEPS/hwy/lib/pkgconfig LD_LIBRARY_PATH=$DEPS/hwy/lib:${LD_LIBRARY_PATH:-}
fi
PKG=/tmp/fa_pkg
( nice -n 5 python3 -m pip install -q --no-build-isolation --no-deps --target $PKG \
    -C cmake.define.FLASHATTN_PORTABLE_ARCHS=90 -C cmake.define.FLASHATTN_SM80_ARCHS=90 \
    -C build-dir=/tmp/fa-pybuild . >$L/pip.log 2>&1; echo "pip exit $? at $(el) s"; tail -3 $L/pip.log ) &
PIP=$!
OUT=$L BUILD=$BUILD bash scripts/device.sh build || exit 1
export OMP_NUM_THREADS=4
T=$BUILD/tests/gpu/test_sm90_backward
summ() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran" "$1" | head -8; grep -E "^\[  FAILED  \]" "$1" | head -10; }
echo "== test_sm90_backward [$(el) s]"
timeout 200 $T --gtest_brief=1 >$L/t_sm90.log 2>&1; summ $L/t_sm90.log
echo "== test_backward [$(el) s]"
timeout 150 $BUILD/tests/gpu/test_backward --gtest_brief=1 >$L/t_bwd.log 2>&1; summ $L/t_bwd.log
echo "== racecheck D = 256 [$(el) s]"
timeout 90 compute-sanitizer --tool racecheck $T \
  --gtest_filter='*bf16_bshd_b2_q300_k300_h2_d256_causalBR*:*_h8kv2_d256' 2>&1 | grep -E "RACECHECK SUMMARY|PASSED|FAILED" | head -4
echo "== gtest bench [$(el) s]"
FA_BENCH_DIMS=64,128,256 FA_BENCH_SEQS=512,1024,4096 FA_BENCH_NO_PORTABLE=1 FA_BENCH_VARIANTS=sm90,sm90_det \
  timeout 100 $BUILD/tests/gpu/test_backward_bench --gtest_also_run_disabled_tests --gtest_filter='*Bench*' 2>&1 | grep "^BENCH [0-9]"
echo "== waiting for pip [$(el) s]"; wait $PIP
echo "== integrated bench [$(el) s]"
PYTHONPATH=$PKG PYTHONUNBUFFERED=1 timeout 240 python3 -m flashattn.bench --device cuda --dims 64,128,256 \
  --seqlens 512,1024,2048 --dtypes bf16,fp16 --directions bwd --peers flash,cudnn --out /tmp/ib --no-plot --budget 0.25 \
  2>$L/ib.err
tail -3 $L/ib.err
cp /tmp/ib/*.json $OUT/ 2>/dev/null
tar -czf $OUT/logs.tgz -C $L . 2>/dev/null
echo "done [$(el) s]"
