#!/usr/bin/env bash
# A/B for the sm80 forward v6 candidate (docs/perf/cuda_forward.md, "v6 candidate"):
# FLASHATTN_SM80_FWD_LEAN=3 (kLeanEnds in the unshaped D = 64 and D = 128 kernels)
# against the default (v5), in one call, beside SDPA's FlashAttention-2.
#   1. test_forward's Sm80 cases (every sm80 forward kernel, the new lean-mask
#      cases at D = 64/128 included) under the switch, 8 shards in parallel, and
#      test_forward_api beside them;
#   2. flashattn_gpu_bench sm80 (D = 64/128/256, both dtypes, S = 512..16k) as
#      default, switch, default, switch (ABAB: drift shows as A1 vs A2); D = 256
#      is a control (the switch leaves its kernels alone, so its ratio is noise);
#   3. FA2 (SDPA flash) on the bf16 cells S = 1k/2k/4k, then one table.
# Needs a tree built by `OUT=$OUT BUILD=$BUILD bash scripts/device.sh build`.
# Usage (device, repository root): OUT=$OUT BUILD=/tmp/build-x bash docs/perf/sm80_lean_ab.sh
# Writes 2 files: $OUT/sm80_lean_ab.txt (the summary, also printed) and $OUT/sm80_lean_logs.tgz.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
BUILD=${BUILD:?set BUILD to the built tree}
OUT=${OUT:-/tmp/out-sm80-lean}
L=/tmp/sm80_lean_logs; rm -rf $L; mkdir -p "$OUT" $L
export LD_LIBRARY_PATH=$BUILD/src:${LD_LIBRARY_PATH:-}
export OMP_NUM_THREADS=2
SW=3  # bit mask: 1 = D 64, 2 = D 128
SUM=$OUT/sm80_lean_ab.txt
: >"$SUM"
say() { echo "$*" | tee -a "$SUM"; }

say "== tests: FLASHATTN_SM80_FWD_LEAN=$SW test_forward --gtest_filter='Sm80/*' (8 shards) + test_forward_api [$(el) s]"
for i in 0 1 2 3 4 5 6 7; do
  FLASHATTN_SM80_FWD_LEAN=$SW GTEST_TOTAL_SHARDS=8 GTEST_SHARD_INDEX=$i timeout 60 \
    $BUILD/tests/gpu/test_forward --gtest_filter='Sm80/*' --gtest_brief=1 >$L/test_$i.log 2>&1 &
done
FLASHATTN_SM80_FWD_LEAN=$SW timeout 60 $BUILD/tests/gpu/test_forward_api --gtest_brief=1 >$L/test_api.log 2>&1 &
wait
cat $L/test_*.log >$L/tests.log
# gtest's closing summary per shard: "[  PASSED  ] N tests.", "[  FAILED  ] N tests, listed below:", ...
cnt() { grep -hoE "^\[  $1 *\] [0-9]+ tests?[.,]" $L/test_*.log | awk '{s += $(NF - 1)} END {print s + 0}'; }
p=$(cnt PASSED); f=$(cnt FAILED); s=$(cnt SKIPPED)
n=$(grep -hoE "^\[==========\] [0-9]+ tests? from .* ran" $L/test_*.log | awk '{s += $2} END {print s + 0}')
say "tests under the switch: $n ran, $p passed, $f failed, $s skipped ($(grep -L '^\[==========\].* ran' $L/test_*.log | wc -l) shards without a summary: crash or timeout)"
grep -hE "^\[  FAILED  \] .*GetParam" $L/tests.log | cut -c1-160 | head -10 | tee -a "$SUM"

B=$BUILD/tests/gpu/flashattn_gpu_bench
run_bench() {  # file, switch value
  say "== bench FLASHATTN_SM80_FWD_LEAN=$2 -> $(basename $1) [$(el) s]"
  FLASHATTN_SM80_FWD_LEAN=$2 timeout 35 $B sm80 dims=64,128,256 >$1 2>&1 || say "bench exit $? ($1)"
}
run_bench $L/a1.txt 0
run_bench $L/b1.txt $SW
run_bench $L/a2.txt 0
if [ $(el) -lt 105 ]; then run_bench $L/b2.txt $SW; else say "(b2 skipped: $(el) s used)"; fi

say "== FA2 peers and table [$(el) s]"
timeout 40 python3 - "$L" >>"$SUM" 2>$L/peers.err <<'PY'
import os, sys
sys.path.insert(0, "tests/gpu")
from bench_peers import peers, read_bench  # SDPA timing as bench_peers.py does it
from torch.nn.attention import SDPBackend

L = sys.argv[1]
runs = {n: read_bench(os.path.join(L, n + ".txt")) for n in ("a1", "b1", "a2", "b2") if os.path.exists(os.path.join(L, n + ".txt"))}
a = [runs[n] for n in ("a1", "a2") if n in runs]
b = [runs[n] for n in ("b1", "b2") if n in runs]
mean = lambda rs, k: sum(r[k][1] for r in rs if k in r) / max(1, sum(k in r for r in rs))
cells = [("bf16", d, c, s) for d in (64, 128, 256) for c in (0, 1) for s in (1024, 2048, 4096)]
pr = peers([k + (16384 // k[3],) for k in cells], (("fa2", SDPBackend.FLASH_ATTENTION),))
print("TFLOP/s; default = mean of A runs, lean = mean of B runs (FLASHATTN_SM80_FWD_LEAN=3); D=256 is the control")
print("| dtype | D | causal | S | default | lean | lean/default | A2/A1 | FA2 | default/FA2 | lean/FA2 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for k in cells:
    da, lb, fa = mean(a, k), mean(b, k), pr[k]["fa2"]
    drift = a[1][k][1] / a[0][k][1] if len(a) == 2 and k in a[0] and k in a[1] else float("nan")
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {da:.1f} | {lb:.1f} | {lb / da:.3f} | {drift:.3f} | {fa:.1f} "
          f"| {da / fa:.2f} | {lb / fa:.2f} |")
# Every benched cell (both dtypes, S = 512..16k): lean/default ranges per (dtype, D, causal).
print("\n| dtype | D | causal | lean/default S=512..16k | A2/A1 |")
print("|---|---|---|---|---|")
keys = sorted(set().union(*[set(r) for r in a + b]))
groups = {}
for k in keys:
    groups.setdefault(k[:3], []).append(k)
for g, ks in groups.items():
    r = [mean(b, k) / mean(a, k) for k in ks if mean(a, k) > 0]
    dr = [a[1][k][1] / a[0][k][1] for k in ks if len(a) == 2 and k in a[0] and k in a[1]]
    rs = f"{min(r):.3f}-{max(r):.3f}" if r else "-"
    ds = f"{min(dr):.3f}-{max(dr):.3f}" if dr else "-"
    print(f"| {g[0]} | {g[1]} | {g[2]} | {rs} | {ds} |")
PY
[ -s $L/peers.err ] && tail -3 $L/peers.err | tee -a "$SUM"
cat "$SUM" | sed -n '/TFLOP/,$p'
tar -czf $OUT/sm80_lean_logs.tgz -C $L . 2>/dev/null
echo "done [$(el) s]"
