#!/usr/bin/env bash
# v5 call 2 (device, carried binaries): sm80 tests under the head-major order
# (FLASHATTN_SM80_FWD_ALT=2), the bench v4 (ALT=1) vs head-major (ALT=2) beside
# FA2/cuDNN, and ncu counters for ours (v4 d256) vs FA2 at d256 S=1k and 4k.
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
rm -f /tmp/tf_*.log
for i in 0 1 2 3 4 5 6 7; do
  FLASHATTN_SM80_FWD_ALT=2 GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 200 ./test_forward --gtest_filter='Sm80*' >/tmp/tf_$i.log 2>&1 &
done
wait
cat /tmp/tf_*.log > "$OUT/tests_alt2.log"
echo "test_forward Sm80* ALT=2: passed $(grep -h -E '^\[  PASSED  \]' /tmp/tf_*.log | awk '{s+=$4} END{print s}'), failed $(cat /tmp/tf_*.log | grep -E '^\[  FAILED  \] .*MatchesReference' | awk '{print $4}' | sort -u | wc -l), skipped $(grep -h -E '^\[  SKIPPED \] [0-9]+ test' /tmp/tf_*.log | awk '{s+=$4} END{print s+0}') [$((SECONDS-t0)) s]"
FLASHATTN_SM80_FWD_ALT=1 timeout 90 ./flashattn_gpu_bench sm80 >"$OUT/bench_v4.txt" 2>&1; echo "bench v4 rc=$? [$((SECONDS-t0)) s]"
FLASHATTN_SM80_FWD_ALT=2 timeout 90 ./flashattn_gpu_bench sm80 >"$OUT/bench_hm.txt" 2>&1; echo "bench head-major rc=$? [$((SECONDS-t0)) s]"
timeout 200 python3 "$TREE/tests/gpu/bench_peers.py" "$OUT/bench_hm.txt" base="$OUT/bench_v4.txt" >"$OUT/bench_table.md" 2>&1
echo "peers rc=$? [$((SECONDS-t0)) s]"
timeout 60 ./flashattn_gpu_bench portable >"$OUT/bench_f32.txt" 2>&1; echo "bench fp32 rc=$? [$((SECONDS-t0)) s]"
timeout 120 python3 "$TREE/tests/gpu/bench_peers.py" fp32 "$OUT/bench_f32.txt" >"$OUT/bench_f32_table.md" 2>&1; echo "peers fp32 rc=$? [$((SECONDS-t0)) s]"
cat "$OUT/bench_f32_table.md"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
M=gpu__time_duration.sum,sm__cycles_active.avg,sm__cycles_elapsed.avg,sm__warps_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,lts__t_sector_hit_rate.pct,dram__bytes_read.sum,dram__bytes_write.sum,smsp__inst_executed.sum,launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,smsp__average_warps_issue_stalled_membar_per_issue_active.ratio,smsp__average_warps_issue_stalled_dispatch_stall_per_issue_active.ratio,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio
if [ -n "$NCU" ]; then
  for S in 1024 4096; do
    B=$((16384 / S))
    FLASHATTN_SM80_FWD_ALT=1 timeout 60 $NCU -k regex:forward_kernel --launch-skip 3 --launch-count 1 --metrics $M ./flashattn_gpu_bench sm80 cell=256:0:$S reps=2 >/tmp/ncu_ours_$S.txt 2>&1
    echo "== ours v4 d256 S=$S rc=$?"; grep -E "^\s+(gpu__|sm__|smsp__|l1tex|lts|dram|launch)" /tmp/ncu_ours_$S.txt | awk '{$1=$1; print}' | head -30
    cat > /tmp/fa2.py <<PY
import torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
q, k, v = (torch.randn($B, 8, $S, 256, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
    for _ in range(4): F.scaled_dot_product_attention(q, k, v)
torch.cuda.synchronize()
PY
    timeout 90 $NCU -k regex:flash_fwd --launch-skip 2 --launch-count 1 --metrics $M python3 /tmp/fa2.py >/tmp/ncu_fa2_$S.txt 2>&1
    echo "== FA2 d256 S=$S rc=$?"; grep -E "flash_fwd" /tmp/ncu_fa2_$S.txt | head -1 | cut -c1-200; grep -E "^\s+(gpu__|sm__|smsp__|l1tex|lts|dram|launch)" /tmp/ncu_fa2_$S.txt | awk '{$1=$1; print}' | head -30
  done
  cat /tmp/ncu_*.txt > "$OUT/ncu.txt"
fi
echo "[$((SECONDS-t0)) s]"
cat "$OUT/bench_table.md"
