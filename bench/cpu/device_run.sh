#!/bin/bash
# docs/perf/cpu.md: run from a folder holding the binaries (flashattn, flashattn_cpu_bench,
# flashattn_cpu_gemm_bench) and the shared libraries they load; last call: variants A/B, then the figures with the CLI and the bench
# program interleaved, the tile-GEMM gauge before and after.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD
g() { taskset -c 0 ./flashattn_cpu_gemm_bench 128 | grep -E "peak|Q K|P V|streamed"; }
echo "== gauge before"; g
P2=$(OMP_PROC_BIND=close taskset -c 0-1 ./flashattn_cpu_gemm_bench 128 2 | grep "at once" | awk '{print $(NF-4)}'); echo "P2 $P2"
for rep in 1 2; do for v in base hwyexp bk256 bq192; do
  if [ $v = base ]; then L=$PWD; else L=$PWD/var/$v:$PWD; fi
  echo "== variant $v rep $rep"
  LD_LIBRARY_PATH=$L OMP_NUM_THREADS=2 OMP_PROC_BIND=close taskset -c 0-1 ./flashattn_cpu_bench --peak $P2 --reps 5 --dtype f32 | tail -4
done; done
for rep in 1 2 3; do
  echo "== run $rep: flashattn bench --device cpu --backward --threads 2"
  OMP_PROC_BIND=close taskset -c 0-1 ./flashattn bench --device cpu --backward --threads 2 --repeat 5 --peak-gflops $P2 2>&1 | tail -4
  echo "== run $rep: flashattn_cpu_bench"
  OMP_NUM_THREADS=2 OMP_PROC_BIND=close taskset -c 0-1 ./flashattn_cpu_bench --peak $P2 --reps 5 | tail -8
done
P16=$(OMP_PROC_BIND=close ./flashattn_cpu_gemm_bench 128 16 | grep "at once" | awk '{print $(NF-4)}'); echo "P16 $P16"
for rep in 1 2; do
  echo "== 16 threads run $rep"
  OMP_PROC_BIND=close ./flashattn bench --device cpu --backward --threads 16 --repeat 5 --peak-gflops $P16 2>&1 | tail -4
done
echo "== gauge after"; g
