#!/usr/bin/env bash
# (Record of the A/B call of 2026-11-22 session 3: both switches won and were removed
# afterwards, their paths made the defaults; docs/perf/cuda_backward_v4_check.sh checks those.)
# One device call for the sm90 backward "v4 candidate" A/B (docs/perf/cuda_backward.md):
# build (and the pip package in the background for the integrated bench), the tests
# under each switch, racecheck on the D = 256 copy-engine dQ path, our bench under each
# switch and the SDPA peers (docs/perf/cuda_backward_peers.py), then the integrated
# bench (python -m flashattn.bench, the method of docs/performance.md) on the cells
# under FA2, default vs the switches, and an nsys split of D = 64 S = 512 if time is left.
# Usage (device, copied tree): OUT=$OUT BUILD=/tmp/build-x bash docs/perf/cuda_backward_v4_ab.sh
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
BUILD=${BUILD:-/tmp/build-v4}
OUT=${OUT:-/tmp/out-v4}
L=/tmp/v4logs; mkdir -p "$OUT" $L
OUT=$L BUILD=$BUILD bash scripts/device.sh build || exit 1
# The pip package (as scripts/device.sh bench builds it), while the tests run.
PKG=/tmp/fa_pkg
( nice -n 10 python3 -m pip install -q --no-build-isolation --no-deps --target $PKG \
    -C cmake.define.FLASHATTN_PORTABLE_ARCHS=90 -C cmake.define.FLASHATTN_SM80_ARCHS=90 \
    -C build-dir=/tmp/fa-pybuild . >$L/pip.log 2>&1; echo "pip exit $? at $(el) s" ) &
PIP=$!
T=$BUILD/tests/gpu/test_sm90_backward
B=$BUILD/tests/gpu/test_backward_bench
export OMP_NUM_THREADS=4
summ() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran" "$1" | head -8; grep -E "^\[  FAILED  \]" "$1" | head -10; }
echo "== tests: FLASHATTN_SM90_BWD_SCRATCH=vec test_sm90_backward (all) [$(el) s]"
FLASHATTN_SM90_BWD_SCRATCH=vec timeout 240 $T --gtest_brief=1 >$L/t_vec.log 2>&1; summ $L/t_vec.log
echo "== tests: FLASHATTN_SM90_BWD_D256_DQ=tma (head dims 136-256) [$(el) s]"
FLASHATTN_SM90_BWD_D256_DQ=tma timeout 180 $T --gtest_brief=1 --gtest_filter='*_d256*:*_d192*:*_d136*:*Dispatch*' >$L/t_tma.log 2>&1; summ $L/t_tma.log
echo "== tests: vec test_backward [$(el) s]"
FLASHATTN_SM90_BWD_SCRATCH=vec timeout 200 $BUILD/tests/gpu/test_backward --gtest_brief=1 >$L/tb_vec.log 2>&1; summ $L/tb_vec.log
echo "== racecheck: D = 256 tma [$(el) s]"
FLASHATTN_SM90_BWD_D256_DQ=tma timeout 120 compute-sanitizer --tool racecheck $T \
  --gtest_filter='*bf16_bshd_b2_q300_k300_h2_d256_causalBR*:*_h8kv2_d256' 2>&1 | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" | head -6
echo "== waiting for pip [$(el) s]"; wait $PIP
bench() {  # label, dims, env...
  local label=$1 dims=$2; shift 2
  echo "== bench $label [$(el) s]"
  env "$@" FA_BENCH_DIMS=$dims FA_BENCH_SEQS=512,1024,4096 FA_BENCH_NO_PORTABLE=1 FA_BENCH_VARIANTS=sm90 \
    timeout 150 $B --gtest_also_run_disabled_tests --gtest_filter='*Bench*' 2>&1 | grep "^BENCH [0-9]" | sed "s/| sm90/| $label/"
}
bench default 64,128,256
bench vec 64,128,256 FLASHATTN_SM90_BWD_SCRATCH=vec
bench tma 256 FLASHATTN_SM90_BWD_D256_DQ=tma
bench vec+tma 256 FLASHATTN_SM90_BWD_SCRATCH=vec FLASHATTN_SM90_BWD_D256_DQ=tma
echo "== peers [$(el) s]"
FA_BENCH_DIMS=64,128,256 FA_BENCH_SEQS=512,1024,4096 timeout 200 python3 docs/perf/cuda_backward_peers.py 2>&1 | grep "^BENCH"
ib() {  # label, dtypes, env...: the integrated bench, backward only, the cells under FA2
  local label=$1 dts=$2; shift 2
  echo "== integrated bench $label [$(el) s]"
  env "$@" PYTHONPATH=$PKG PYTHONUNBUFFERED=1 timeout 150 python3 -m flashattn.bench --device cuda --dims 64,256 \
    --seqlens 512,1024 --dtypes $dts --directions bwd --peers flash,cudnn --out /tmp/ib-$label --no-plot --budget 0.25 2>$L/ib-$label.err
  tail -3 $L/ib-$label.err
}
ib default bf16,fp16
ib vec+tma bf16,fp16 FLASHATTN_SM90_BWD_SCRATCH=vec FLASHATTN_SM90_BWD_D256_DQ=tma
ib vec bf16 FLASHATTN_SM90_BWD_SCRATCH=vec
# Where a D = 64, S = 512 call's time goes (memset, row sum, main kernel, dQ conversion).
if command -v nsys >/dev/null 2>&1 && [ $(el) -lt 470 ]; then
  for sw in default vec; do
    echo "== nsys D=64 S=512 ($sw) [$(el) s]"
    env $([ $sw = vec ] && echo FLASHATTN_SM90_BWD_SCRATCH=vec) FA_BENCH_DIMS=64 FA_BENCH_SEQS=512 FA_BENCH_NO_PORTABLE=1 \
      FA_BENCH_VARIANTS=sm90 timeout 60 nsys profile -t cuda -o /tmp/v4-$sw --force-overwrite true \
      $B --gtest_also_run_disabled_tests --gtest_filter='*Bench*' >/dev/null 2>&1
    timeout 40 nsys stats -r cuda_gpu_kern_sum,cuda_gpu_mem_time_sum --format csv /tmp/v4-$sw.nsys-rep 2>/dev/null |
      grep -iE "dsum|convert_dq|memset|backward_kernel|flash" | cut -c1-160 | head -12
  done
fi
tar -czf $OUT/logs.tgz -C $L . 2>/dev/null
echo "done [$(el) s]"
