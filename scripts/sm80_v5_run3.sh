#!/usr/bin/env bash
# v5 call 3 (device, carried binaries): every forward GPU test with the v5
# default (kLeanBlock), then the forced-sm80 bench v5 vs v4
# (FLASHATTN_SM80_FWD_ALT=1) beside SDPA FA2 and cuDNN in the same call.
set -uo pipefail
BIN=$1; TREE=$2
cd "$BIN"
export LD_LIBRARY_PATH=$PWD:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/fa_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader
t0=$SECONDS
for i in 0 1 2 3 4 5 6 7; do
  GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 240 ./test_forward >/tmp/tf_$i.log 2>&1 &
done
wait
cat /tmp/tf_*.log > "$OUT/tests.log"
echo "test_forward: passed $(grep -h -E '^\[  PASSED  \]' /tmp/tf_*.log | awk '{s+=$4} END{print s}'), failed $(cat /tmp/tf_*.log | grep -E '^\[  FAILED  \] .*MatchesReference' | awk '{print $4}' | sort -u | wc -l), skipped $(grep -h -E '^\[  SKIPPED \] [0-9]+ test' /tmp/tf_*.log | awk '{s+=$4} END{print s+0}') [$((SECONDS-t0)) s]"
grep -h -E '^\[  FAILED  \]' /tmp/tf_*.log | sort -u | head -10
timeout 120 ./test_forward_api >/tmp/tfa.log 2>&1; echo "test_forward_api rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' /tmp/tfa.log | tr '\n' ' ')"
timeout 90 ./flashattn_gpu_bench sm80 >"$OUT/bench_v5.txt" 2>&1; echo "bench v5 rc=$? [$((SECONDS-t0)) s]"
FLASHATTN_SM80_FWD_ALT=1 timeout 90 ./flashattn_gpu_bench sm80 >"$OUT/bench_v4.txt" 2>&1; echo "bench v4 rc=$? [$((SECONDS-t0)) s]"
timeout 200 python3 "$TREE/tests/gpu/bench_peers.py" "$OUT/bench_v5.txt" base="$OUT/bench_v4.txt" >"$OUT/bench_table.md" 2>&1
echo "peers rc=$? [$((SECONDS-t0)) s]"
cat "$OUT/bench_table.md"
