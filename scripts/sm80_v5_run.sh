#!/usr/bin/env bash
# On the device (binaries built on the dev machine for sm_90, carried in
# .dev-sm80/devbin): forward GPU tests in 8 shards, then the forced-sm80 bench
# (new build; FLASHATTN_SM80_FWD_ALT=1 for the v4 head-dim-256 kernel) beside
# SDPA flash (FA2) and cuDNN in the same call. Logs under $OUT (few files).
set -uo pipefail
BIN=$1; TREE=$2
cd "$BIN"
export LD_LIBRARY_PATH=$PWD:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
t0=$SECONDS
ldd ./test_forward | grep -E "flashattn|hwy|gomp|cudart|not found"
timeout 120 ./test_forward_api >/tmp/tfa.log 2>&1; echo "test_forward_api rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' /tmp/tfa.log | tr '\n' ' ')"
for i in 0 1 2 3 4 5 6 7; do
  GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 240 ./test_forward >/tmp/tf_$i.log 2>&1 &
done
wait
cat /tmp/tfa.log /tmp/tf_*.log > "$OUT/tests.log"
echo "test_forward: passed $(grep -h -E '^\[  PASSED  \]' /tmp/tf_*.log | awk '{s+=$4} END{print s}'), failed $(cat /tmp/tf_*.log | grep -E '^\[  FAILED  \] .*MatchesReference' | awk '{print $4}' | sort -u | wc -l), skipped $(grep -h -E '^\[  SKIPPED \] [0-9]+ test' /tmp/tf_*.log | awk '{s+=$4} END{print s+0}') [$((SECONDS-t0)) s]"
grep -h -E '^\[  FAILED  \]' /tmp/tf_*.log | sort -u | head -20
grep -h -E 'rc=|Timeout|Segmentation|Aborted' /tmp/tf_*.log | head -5
timeout 150 ./flashattn_gpu_bench sm80 >"$OUT/bench_new.txt" 2>&1; echo "bench new rc=$? [$((SECONDS-t0)) s]"
FLASHATTN_SM80_FWD_ALT=1 timeout 90 ./flashattn_gpu_bench sm80 dims=256 >"$OUT/bench_v4.txt" 2>&1; echo "bench v4 d256 rc=$? [$((SECONDS-t0)) s]"
timeout 240 python3 "$TREE/tests/gpu/bench_peers.py" "$OUT/bench_new.txt" col=v4:"$OUT/bench_v4.txt" >"$OUT/bench_table.md" 2>&1
echo "peers rc=$? [$((SECONDS-t0)) s]"
cat "$OUT/bench_table.md"
