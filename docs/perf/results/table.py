"""Prints the markdown tables of docs/performance.md from a flashattn.bench JSON.

    python3 docs/perf/results/table.py docs/perf/results/h200-2026-11-22-bench_cuda.json bf16
"""
import json
import sys


def main(path, dtype):
    rows = [r for r in json.load(open(path))["results"] if r.get("dtype") == dtype and "impl" in r]
    seqs = sorted({r["seqlen"] for r in rows})
    for direction in ("fwd", "bwd"):
        print(f"\n{direction}, {dtype}: ours TFLOP/s (× SDPA flash = FA2, × cuDNN)\n")
        print("| D | causal | " + " | ".join(f"S={s}" for s in seqs) + " |")
        print("|---|---|" + "---|" * len(seqs))
        for d in sorted({r["d"] for r in rows}):
            for causal in (False, True):
                cells = []
                for s in seqs:
                    r = next(x for x in rows if x["direction"] == direction and x["d"] == d
                             and x["causal"] == causal and x["seqlen"] == s)
                    ours, fa2, cudnn = (r["impl"][k].get("tflops") for k in ("ours", "flash", "cudnn"))
                    cells.append(f"{ours:.0f} ({ours / fa2:.2f}, {ours / cudnn:.2f})")
                print(f"| {d} | {'yes' if causal else 'no'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bf16")
