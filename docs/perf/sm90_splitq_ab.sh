#!/usr/bin/env bash
# One device call: the A/B of the sm90 forward "split Q" candidate (v11 candidate,
# docs/perf/cuda_sm90.md), switch FLASHATTN_SM90_SPLIT_Q=1.
#   1. test_sm90_forward (every case: all head dims, dtypes, masks, varlen, multi-tile)
#      and test_forward_api under the switch; racecheck + synccheck under the switch on
#      the multi-tile cases and the D = 64 / D = 256 causal ones (new barriers).
#   2. flashattn_gpu_bench (auto = sm90 here) default, switch, switch, default (ABBA),
#      then the SDPA peers (FA2, cuDNN) on the short cells (bf16, S = 512-2k).
# Needs a tree built by `OUT=$OUT BUILD=$BUILD bash scripts/device.sh build`.
# Usage (device, repository root): OUT=$OUT BUILD=/tmp/build-x bash docs/perf/sm90_splitq_ab.sh
# Writes 2 files under $OUT: splitq_ab.txt (the tables) and splitq_logs.tgz.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
BUILD=${BUILD:?BUILD: the build folder of scripts/device.sh build}
OUT=${OUT:-/tmp/out-splitq}
L=/tmp/splitq-logs; rm -rf $L; mkdir -p "$OUT" $L
export LD_LIBRARY_PATH=$BUILD/src:${LD_LIBRARY_PATH:-}
T=$BUILD/tests/gpu/test_sm90_forward
A=$BUILD/tests/gpu/test_forward_api
B=$BUILD/tests/gpu/flashattn_gpu_bench
SW=FLASHATTN_SM90_SPLIT_Q
R=$OUT/splitq_ab.txt
{
echo "# sm90 forward split-Q A/B ($SW=1), $(date -u)"
# The last three MatchesReference cases are the multi-tile ones (test_sm90_forward.cpp);
# 1 and 5: D = 64 and D = 256 causal 300 x 300.
ids=$( (timeout 20 $T --gtest_list_tests 2>/dev/null | grep -o 'MatchesReference/[0-9]*_' | tail -3; echo "MatchesReference/1_"; echo "MatchesReference/5_") |
  sed 's|^|Cases/Sm90Forward.|; s|$|*|' | paste -sd: -)
echo "sanitizer cases: $ids"
summ() { echo "$1: $(grep -E '^\[  PASSED  \]|^\[  FAILED  \]|^\[  SKIPPED \]' "$2" | sed 's/\[ *//; s/ *\]//' | tr '\n' ' ')"; grep -E "^\[  FAILED  \] .*\." "$2" | head -8; }
echo "== tests under $SW=1 [$(el) s]"
( env $SW=1 OMP_NUM_THREADS=6 timeout 100 $T --gtest_brief=1 >$L/t_split.log 2>&1; echo "test_sm90_forward exit $?" >>$L/t_split.log ) &
P1=$!
( env $SW=1 OMP_NUM_THREADS=3 timeout 100 $A --gtest_brief=1 >$L/api_split.log 2>&1; echo "test_forward_api exit $?" >>$L/api_split.log ) &
P2=$!
san() {
  env $SW=1 OMP_NUM_THREADS=2 timeout 80 compute-sanitizer --tool $1 --error-exitcode 9 $T --gtest_filter="$ids" >$L/san_$1.log 2>&1
  echo "compute-sanitizer $1 exit $? (9 = errors, 124 = timeout)" >>$L/san_$1.log
}
san racecheck &
P3=$!
san synccheck &
P4=$!
wait $P1 $P2 $P3 $P4
summ test_sm90_forward $L/t_split.log; tail -1 $L/t_split.log
summ test_forward_api $L/api_split.log; tail -1 $L/api_split.log
for tool in racecheck synccheck; do grep -E "ERROR SUMMARY|RACECHECK SUMMARY" $L/san_$tool.log | head -2; tail -1 $L/san_$tool.log; done
# Bench: default / switch / switch / default, one at a time (ABBA cancels drift).
bench() { env "$@" timeout 60 $B auto dims=64,128,256 2>&1; }
echo "== bench [$(el) s]"
bench X=0 >$L/a1.txt
bench $SW=1 >$L/b1.txt
bench $SW=1 >$L/b2.txt
bench X=0 >$L/a2.txt
echo "== peers [$(el) s]"
cd "$(dirname "$0")/../.." && PYTHONPATH=tests/gpu timeout 90 python3 - $L <<'PY'
import sys
import bench_peers as bp
from torch.nn.attention import SDPBackend
L = sys.argv[1]
runs = {n: bp.read_bench(f"{L}/{n}.txt") for n in ("a1", "b1", "b2", "a2")}
keys = sorted(runs["a1"])
def mean(n1, n2, k):
    return (runs[n1].get(k, ("-", float("nan"), 0))[1] + runs[n2].get(k, ("-", float("nan"), 0))[1]) / 2
impl = {k: runs["b1"].get(k, ("?",))[0] + "/" + runs["a1"][k][0] for k in keys}
short = [k for k in keys if k[0] == "bf16" and k[3] <= 2048]
pr = bp.peers([k + (16384 // k[3],) for k in short],
              (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)))
print("TFLOP/s; default = mean of A1, A2; split = mean of B1, B2 (ABBA)")
print("| dtype | D | causal | S | impl | default | split | split/default | cudnn | default/cudnn | split/cudnn | fa2 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k in short:
    a, b = mean("a1", "a2", k), mean("b1", "b2", k)
    c, f = pr[k]["cudnn"], pr[k]["fa2"]
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {impl[k]} | {a:.1f} | {b:.1f} | {b / a:.3f} | {c:.1f} | {a / c:.2f} | {b / c:.2f} | {f:.1f} |")
print("\nsplit/default, every cell of the grid (A1 vs A2 spread shows the noise):")
print("| dtype | D | causal | " + " | ".join(f"S={s}" for s in (512, 1024, 2048, 4096, 8192, 16384)) + " | A2/A1 range |")
print("|---|---|---|" + "---|" * 7)
groups = {}
for k in keys:
    groups.setdefault(k[:3], []).append(k)
for g, ks in groups.items():
    ks.sort(key=lambda k: k[3])
    rat = [mean("b1", "b2", k) / mean("a1", "a2", k) for k in ks]
    noise = [runs["a2"][k][1] / runs["a1"][k][1] for k in ks]
    print(f"| {g[0]} | {g[1]} | {g[2]} | " + " | ".join(f"{r:.3f}" for r in rat) + f" | {min(noise):.3f}-{max(noise):.3f} |")
PY
echo "done [$(el) s]"
} 2>&1 | tee $R
tar -czf $OUT/splitq_logs.tgz -C $L . 2>/dev/null
