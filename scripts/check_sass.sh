#!/usr/bin/env bash
# Checks the Hopper forward kernel in a built library (or object file):
#   1. its SASS contains HGMMA (wgmma) instructions, in every instantiation;
#   2. it uses no local memory (STACK:0 LOCAL:0 in cuobjdump -res-usage: no spills);
#   2b. in the late-P.V-wait instantiations, the wait comes after the softmax's
#       exponentials (ptxas hoists waits; mainloop.cuh kLateWait);
#   2c. the setmaxnreg budgets (producer + consumers) fit the CTA's register pool;
#   3. with nvcc given, ptxas -v on src/cuda/sm90/forward.cu reports 0 spill bytes.
# Usage: check_sass.sh <libflashattn.so|forward.cu.o> [nvcc] [source root]
# Exit 77 (CTest SKIP_RETURN_CODE) when cuobjdump (with its nvdisasm) is not found:
#   pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm (PyPI has 13.2 as the oldest 13.x).
set -euo pipefail
target=${1:?usage: check_sass.sh <library or object> [nvcc] [source root]}
nvcc=${2:-}
root=${3:-$(cd "$(dirname "$0")/.." && pwd)}

# cuobjdump: $CUOBJDUMP, PATH, the CUDA toolkit, or the PyPI wheel (nvidia/cu13/bin).
find_tool() {
  local name=$1 var=$2
  if [[ -n ${!var:-} && -x ${!var} ]]; then echo "${!var}"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  for d in /usr/local/cuda/bin $(dirname "${nvcc:-/nonexistent/x}"); do
    [[ -x $d/$name ]] && { echo "$d/$name"; return; }
  done
  local py
  for py in python3 python; do
    command -v $py >/dev/null 2>&1 || continue
    local p
    p=$($py - "$name" <<'PY' 2>/dev/null || true
import glob, os, site, sys
dirs = site.getsitepackages() + [site.getusersitepackages()]
for d in dirs:
    for f in glob.glob(os.path.join(d, "nvidia", "*", "bin", sys.argv[1])):
        print(f); raise SystemExit
PY
)
    [[ -n $p ]] && { echo "$p"; return; }
  done
}
cuobjdump=$(find_tool cuobjdump CUOBJDUMP)
if [[ -z $cuobjdump ]]; then echo "SKIP: cuobjdump not found"; exit 77; fi
nvdisasm=$(find_tool nvdisasm NVDISASM)
if [[ -z $nvdisasm ]]; then echo "SKIP: nvdisasm (needed by cuobjdump --dump-sass) not found"; exit 77; fi
export PATH="$(dirname "$nvdisasm"):$PATH"
echo "cuobjdump: $cuobjdump"

fail=0
sass=$("$cuobjdump" --dump-sass "$target")
# Per sm90 kernel instantiation: count HGMMA lines.
counts=$(awk '/Function : /{name=$3; keep=(name ~ /4sm90/ && name ~ /forward_kernel/)} keep && /HGMMA/{n[name]++} keep{seen[name]=1} END{for (k in seen) print k, n[k]+0}' <<<"$sass")
if [[ -z $counts ]]; then echo "FAIL: no sm90 forward kernel found in $target"; exit 1; fi
while read -r name n; do
  if (( n == 0 )); then echo "FAIL: $name has no HGMMA"; fail=1; else echo "ok: $n HGMMA in $name"; fi
done <<<"$counts"

# The late P.V wait (mainloop.cuh kLateWait, instantiations named ...Lb1E): in the
# steady loop, from the S wait (DEPBAR gsb0 0x1) to the next turn (BAR.SYNC on a
# register id), no MUFU.EX2 may follow the P.V wait (DEPBAR gsb0 0x0); ptxas hoisting
# it back above the softmax would show up here.
late=$(awk '/Function : /{name=$3; keep=(name ~ /4sm90/ && name ~ /forward_kernel/ && name ~ /Lb1E/); st=0}
  keep && st==0 && /DEPBAR.LE gsb0, 0x1/{st=1; ex=0; next}
  keep && st==1 && /DEPBAR.LE gsb0, 0x0/{st=2}
  keep && st==2 && /MUFU.EX2/{ex++}
  keep && st>=1 && /BAR.SYNC.DEFER_BLOCKING R[0-9]+, 0x100/{print name, ex+0; st=3}' <<<"$sass")
while read -r name n; do
  [[ -z $name ]] && continue
  if (( n > 0 )); then echo "FAIL: $n MUFU.EX2 after the P.V wait in $name"; fail=1; else echo "ok: P.V wait after the exponentials in $name"; fi
done <<<"$late"

usage=$("$cuobjdump" -res-usage "$target")
bad=$(awk '/Function /{name=$2} /REG:/{if (name ~ /4sm90/ && name ~ /forward_kernel/ && ($0 !~ /STACK:0 / || $0 !~ /LOCAL:0 /)) print name, $0}' <<<"$usage")
if [[ -n $bad ]]; then echo "FAIL: sm90 kernel uses local memory (spills?):"; echo "$bad"; fail=1; else echo "ok: no stack or local memory in the sm90 kernels"; fi

# setmaxnreg moves registers inside the CTA's pool (REG x threads, as launched): the
# producer's release (USETMAXREG.DEALLOC) plus every consumer warpgroup's claim
# (TRY_ALLOC, retried until it succeeds) must fit it, or the claim spins forever
# (v11 split Q: 128 x 32 + 256 x 240 = 65536 > 384 x 168). Threads from the tile
# config: TileConfig<64, 3> runs 4 warpgroups, the others 3.
regs=$(awk '/Function /{name=$2; sub(/:$/, "", name)} /REG:/{if (name ~ /4sm90/ && name ~ /forward_kernel/) {split($1, r, ":"); print name, r[2]}}' <<<"$usage")
nreg=$(awk '/Function : /{name=$3} name ~ /4sm90/ && name ~ /forward_kernel/ && /USETMAXREG.DEALLOC/{d[name]=$NF}
  name ~ /4sm90/ && name ~ /forward_kernel/ && /USETMAXREG.TRY_ALLOC/{a[name]=$NF}
  END{for (k in d) print k, d[k], (k in a) ? a[k] : 0}' <<<"$(sed 's|/\*[^*]*\*/||g; s/ *;//' <<<"$sass")")
while read -r name dealloc alloc; do
  [[ -z $name ]] && continue
  reg=$(awk -v n="$name" '$1 == n {print $2}' <<<"$regs")
  wgs=3; [[ $name == *TileConfigILi64ELi3E* ]] && wgs=4
  dealloc=$((dealloc)); alloc=$((alloc))
  need=$(( 128 * dealloc + 128 * (wgs - 1) * alloc )); pool=$(( ${reg:-0} * 128 * wgs ))
  if (( alloc == 0 || need > pool )); then echo "FAIL: setmaxnreg $dealloc + $((wgs - 1)) x $alloc needs $need registers, pool $pool in $name"; fail=1
  else echo "ok: setmaxnreg $dealloc + $((wgs - 1)) x $alloc = $need <= pool $pool in $name"; fi
done <<<"$nreg"

if [[ -n $nvcc ]]; then
  log=$("$nvcc" -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xptxas -v \
        -I"$root/include" -I"$root/src" -DFLASHATTN_WITH_CUDA=1 -c "$root/src/cuda/sm90/forward.cu" -o /dev/null 2>&1)
  spills=$(grep -o '[0-9]* bytes spill stores, [0-9]* bytes spill loads' <<<"$log" | grep -v '^0 bytes spill stores, 0 bytes' || true)
  reports=$(grep -c 'bytes spill stores' <<<"$log" || true)
  if (( reports == 0 )); then echo "FAIL: no ptxas report"; echo "$log" | tail -5; fail=1
  elif [[ -n $spills ]]; then echo "FAIL: ptxas reports spills:"; echo "$spills"; fail=1
  else echo "ok: ptxas reports 0 spills in $reports kernels"; fi
fi
exit $fail
