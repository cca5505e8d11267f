#!/usr/bin/env bash
# One device call for the sm90 backward "v4 candidate" A/B (docs/perf/cuda_backward.md):
# build, test_sm90_backward under each switch, racecheck on the D = 256 copy-engine
# dQ path, our bench under each switch and the SDPA peers, all in the same call.
# Usage (device, copied tree): OUT=$OUT BUILD=/tmp/build-x bash docs/perf/cuda_backward_v4_ab.sh
set -u
BUILD=${BUILD:-/tmp/build-v4}
OUT=${OUT:-/tmp/out-v4}
mkdir -p "$OUT"
OUT=$OUT BUILD=$BUILD bash scripts/device.sh build || exit 1
T=$BUILD/tests/gpu/test_sm90_backward
B=$BUILD/tests/gpu/test_backward_bench
export OMP_NUM_THREADS=4
summ() { grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran" "$1" | head -8; grep -E "^\[  FAILED  \]" "$1" | head -10; }
echo "== tests: default"; timeout 240 $T --gtest_brief=1 >"$OUT/t_default.log" 2>&1; summ "$OUT/t_default.log"
echo "== tests: FLASHATTN_SM90_BWD_D256_DQ=tma (head dims 136-256)"
FLASHATTN_SM90_BWD_D256_DQ=tma timeout 180 $T --gtest_brief=1 --gtest_filter='*_d256*:*_d192*:*_d136*:*Dispatch*' >"$OUT/t_tma.log" 2>&1; summ "$OUT/t_tma.log"
echo "== tests: FLASHATTN_SM90_BWD_SCRATCH=vec (all)"
FLASHATTN_SM90_BWD_SCRATCH=vec timeout 240 $T --gtest_brief=1 >"$OUT/t_vec.log" 2>&1; summ "$OUT/t_vec.log"
echo "== racecheck: D = 256 tma"
FLASHATTN_SM90_BWD_D256_DQ=tma timeout 120 compute-sanitizer --tool racecheck $T \
  --gtest_filter='*bf16_bshd_b2_q300_k300_h2_d256_causalBR*:*_h8kv2_d256' 2>&1 | grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED" | head -6
bench() {  # label, dims, env...
  local label=$1 dims=$2; shift 2
  echo "== bench $label"
  env "$@" FA_BENCH_DIMS=$dims FA_BENCH_SEQS=512,1024,4096 FA_BENCH_NO_PORTABLE=1 FA_BENCH_VARIANTS=sm90 \
    timeout 150 $B --gtest_also_run_disabled_tests --gtest_filter='*Bench*' 2>&1 | grep "^BENCH [0-9]" | sed "s/| sm90/| $label/"
}
bench default 64,128,256
bench vec 64,128,256 FLASHATTN_SM90_BWD_SCRATCH=vec
bench tma 256 FLASHATTN_SM90_BWD_D256_DQ=tma
bench vec+tma 256 FLASHATTN_SM90_BWD_SCRATCH=vec FLASHATTN_SM90_BWD_D256_DQ=tma
echo "== peers"
FA_BENCH_DIMS=64,128,256 FA_BENCH_SEQS=512,1024,4096 timeout 200 python3 docs/perf/cuda_backward_peers.py 2>&1 | grep "^BENCH"
# Optional (if nsys is on the machine): where a D = 64, S = 512 call's time goes
# (scratch kernels, memset, main kernel), default vs vec.
if command -v nsys >/dev/null 2>&1; then
  for sw in default vec; do
    echo "== nsys D=64 S=512 ($sw)"
    env $([ $sw = vec ] && echo FLASHATTN_SM90_BWD_SCRATCH=vec) FA_BENCH_DIMS=64 FA_BENCH_SEQS=512 FA_BENCH_NO_PORTABLE=1 \
      FA_BENCH_VARIANTS=sm90 timeout 90 nsys profile -t cuda -o /tmp/v4-$sw --force-overwrite true \
      $B --gtest_also_run_disabled_tests --gtest_filter='*Bench*' >/dev/null 2>&1
    timeout 60 nsys stats -r cuda_gpu_kern_sum,cuda_gpu_mem_time_sum --format csv /tmp/v4-$sw.nsys-rep 2>/dev/null |
      grep -iE "dsum|convert_dq|memset|backward_kernel|flash" | cut -c1-160 | head -12
  done
fi
