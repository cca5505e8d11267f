"""PyTorch SDPA's flash (FlashAttention-2) and cuDNN backends on the grid of
flashattn_gpu_bench, timed the same way (CUDA events, median of 7 trials of
back-to-back calls), then one table beside our numbers.

    python3 tests/gpu/bench_peers.py OURS.txt [quick] [base=BASE.txt]
OURS.txt: flashattn_gpu_bench's output. FLOPs: 4*B*H*S^2*D, halved when causal.
BASE.txt (optional): the same bench from a previous build, timed in the same
run, shown as an extra column with ours/base (a version's gain, same machine).
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def time_ms(fn, reps=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    trials = []
    for _ in range(7):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(reps):
            fn()
        e1.record()
        e1.synchronize()
        trials.append(e0.elapsed_time(e1) / reps)
    return sorted(trials)[3]


def read_bench(path):
    cells = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        impl, dt, d, causal, s, b, h, ms, tf = line.split()
        cells[(dt, int(d), int(causal), int(s))] = (impl, float(tf))
    return cells


def main():
    ours = read_bench(sys.argv[1])
    base_arg = [a[5:] for a in sys.argv[2:] if a.startswith("base=")]
    base = read_bench(base_arg[0]) if base_arg else None
    quick = "quick" in sys.argv[2:]
    seqlens = [2048, 8192] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    torch.manual_seed(0)
    rows = []
    for dtn, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        for d in (64, 128, 256):
            for causal in (0, 1):
                for s in seqlens:
                    b, h = 16384 // s, 2048 // d
                    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dt) for _ in range(3))
                    flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
                    peer = {}
                    for name, be in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                        try:
                            with sdpa_kernel(be):
                                ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)))
                            peer[name] = flops / ms * 1e-9
                        except RuntimeError:
                            peer[name] = float("nan")
                    impl, tf = ours.get((dtn, d, causal, s), ("-", float("nan")))
                    rows.append((dtn, d, causal, s, impl, tf, peer["fa2"], peer["cudnn"]))
                    del q, k, v
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; TFLOP/s")
    if base is None:
        print("| dtype | D | causal | S | ours (impl) | fa2 | cudnn | ours/fa2 |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print("| dtype | D | causal | S | ours (impl) | base | ours/base | fa2 | cudnn | ours/fa2 | base/fa2 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for dtn, d, c, s, impl, tf, fa2, cud in rows:
        if base is None:
            print(f"| {dtn} | {d} | {c} | {s} | {tf:.1f} ({impl}) | {fa2:.1f} | {cud:.1f} | {tf / fa2:.2f} |")
        else:
            bt = base.get((dtn, d, c, s), ("-", float("nan")))[1]
            print(f"| {dtn} | {d} | {c} | {s} | {tf:.1f} ({impl}) | {bt:.1f} | {tf / bt:.3f} | {fa2:.1f} | {cud:.1f} "
                  f"| {tf / fa2:.2f} | {bt / fa2:.2f} |")
    # One line per (dtype, D, causal): the ratios' ranges over S, and the cells >= 1.0.
    print("\n| dtype | D | causal | ours/fa2 | ours/cudnn | cells >= fa2 |" + (" ours/base |" if base else ""))
    print("|---|---|---|---|---|---|" + ("---|" if base else ""))
    groups = {}
    for r in rows:
        groups.setdefault(r[:3], []).append(r)
    for (dtn, d, c), rs in groups.items():
        fa = [r[5] / r[6] for r in rs]
        cu = [r[5] / r[7] for r in rs]
        line = (f"| {dtn} | {d} | {c} | {min(fa):.2f}-{max(fa):.2f} | {min(cu):.2f}-{max(cu):.2f} "
                f"| {sum(x >= 1.0 for x in fa)}/{len(fa)} |")
        if base:
            bb = [r[5] / base.get(r[:4], ("-", float("nan")))[1] for r in rs]
            line += f" {min(bb):.3f}-{max(bb):.3f} |"
        print(line)


if __name__ == "__main__":
    main()
