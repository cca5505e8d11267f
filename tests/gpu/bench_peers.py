"""PyTorch SDPA's flash (FlashAttention-2) and cuDNN backends on the grid of
flashattn_gpu_bench, timed the same way (CUDA events, median of 7 trials of
back-to-back calls), then one table beside our numbers.

    python3 tests/gpu/bench_peers.py OURS.txt [quick] [base=BASE.txt] [col=NAME:FILE ...]
    python3 tests/gpu/bench_peers.py fp32 OURS.txt [col=NAME:FILE ...]
OURS.txt: flashattn_gpu_bench's output. FLOPs: 4*B*H*S^2*D, halved when causal.
BASE.txt (optional): the same bench from a previous build, timed in the same
run, shown as an extra column with ours/base (a version's gain, same machine).
col=NAME:FILE (repeatable): more benches of the same grid (variants), each
shown with its ratio to FA2.
fp32: the cells of `flashattn_gpu_bench portable` (fp32, B=4, S=4096) against
SDPA's efficient and math backends instead.
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
        parts = line.split()
        if len(parts) != 9:
            continue
        impl, dt, d, causal, s, b, h, ms, tf = parts
        cells[(dt, int(d), int(causal), int(s))] = (impl, float(tf), int(b))
    return cells


def peers(cells_shape, backends):
    """cells_shape: list of (dtn, d, causal, s, b); returns {key: {name: tflops}}."""
    out = {}
    dts = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    for dtn, d, causal, s, b in cells_shape:
        h = 2048 // d
        q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=dts[dtn]) for _ in range(3))
        flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
        res = {}
        for name, be in backends:
            try:
                with sdpa_kernel(be):
                    ms = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)))
                res[name] = flops / ms * 1e-9
            except RuntimeError:
                res[name] = float("nan")
        out[(dtn, d, causal, s)] = res
        del q, k, v
    return out


def main():
    args = sys.argv[1:]
    fp32 = args and args[0] == "fp32"
    if fp32:
        args = args[1:]
    ours = read_bench(args[0])
    base_arg = [a[5:] for a in args[1:] if a.startswith("base=")]
    base = read_bench(base_arg[0]) if base_arg else None
    cols = [(a[4:].split(":", 1)[0], read_bench(a[4:].split(":", 1)[1])) for a in args[1:] if a.startswith("col=")]
    quick = "quick" in args[1:]
    torch.manual_seed(0)
    nan = ("-", float("nan"), 0)
    if fp32:
        keys = sorted(ours)
        pr = peers([k + (ours[k][2],) for k in keys], (("efficient", SDPBackend.EFFICIENT_ATTENTION),
                                                      ("math", SDPBackend.MATH)))
        print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; TFLOP/s, fp32")
        head = "| dtype | D | causal | S | B | ours (impl) |" + "".join(f" {n} |" for n, _ in cols)
        print(head + " efficient | math | ours/efficient |" + "".join(f" {n}/efficient |" for n, _ in cols))
        print("|" + "---|" * (9 + 2 * len(cols)))
        for k in keys:
            impl, tf, b = ours[k]
            e, m = pr[k]["efficient"], pr[k]["math"]
            line = f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {b} | {tf:.1f} ({impl}) |"
            line += "".join(f" {c.get(k, nan)[1]:.1f} |" for _, c in cols)
            line += f" {e:.1f} | {m:.1f} | {tf / e:.2f} |" + "".join(f" {c.get(k, nan)[1] / e:.2f} |" for _, c in cols)
            print(line)
        return
    seqlens = [2048, 8192] if quick else [512, 1024, 2048, 4096, 8192, 16384]
    shape = [(dtn, d, c, s, 16384 // s) for dtn in ("bf16", "fp16") for d in (64, 128, 256) for c in (0, 1)
             for s in seqlens]
    pr = peers(shape, (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)))
    rows = []
    for dtn, d, c, s, _ in shape:
        key = (dtn, d, c, s)
        impl, tf, _ = ours.get(key, nan)
        rows.append((dtn, d, c, s, impl, tf, pr[key]["fa2"], pr[key]["cudnn"]))
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}; TFLOP/s")
    extra_h = "".join(f" {n} | {n}/fa2 |" for n, _ in cols)
    if base is None:
        print("| dtype | D | causal | S | ours (impl) | fa2 | cudnn | ours/fa2 |" + extra_h)
        print("|---|---|---|---|---|---|---|---|" + "---|---|" * len(cols))
    else:
        print("| dtype | D | causal | S | ours (impl) | base | ours/base | fa2 | cudnn | ours/fa2 | base/fa2 |" + extra_h)
        print("|---|---|---|---|---|---|---|---|---|---|---|" + "---|---|" * len(cols))
    for dtn, d, c, s, impl, tf, fa2, cud in rows:
        key = (dtn, d, c, s)
        extra = "".join(f" {col.get(key, nan)[1]:.1f} | {col.get(key, nan)[1] / fa2:.2f} |" for _, col in cols)
        if base is None:
            print(f"| {dtn} | {d} | {c} | {s} | {tf:.1f} ({impl}) | {fa2:.1f} | {cud:.1f} | {tf / fa2:.2f} |" + extra)
        else:
            bt = base.get(key, nan)[1]
            print(f"| {dtn} | {d} | {c} | {s} | {tf:.1f} ({impl}) | {bt:.1f} | {tf / bt:.3f} | {fa2:.1f} | {cud:.1f} "
                  f"| {tf / fa2:.2f} | {bt / fa2:.2f} |" + extra)
    # One line per (dtype, D, causal): the ratios' ranges over S, and the cells >= 1.0.
    print("\n| dtype | D | causal | ours/fa2 | ours/cudnn | cells >= fa2 |" + (" ours/base |" if base else "")
          + "".join(f" {n}/fa2 | {n} cells >= fa2 |" for n, _ in cols))
    print("|---|---|---|---|---|---|" + ("---|" if base else "") + "---|---|" * len(cols))
    groups = {}
    for r in rows:
        groups.setdefault(r[:3], []).append(r)
    for (dtn, d, c), rs in groups.items():
        fa = [r[5] / r[6] for r in rs]
        cu = [r[5] / r[7] for r in rs]
        line = (f"| {dtn} | {d} | {c} | {min(fa):.2f}-{max(fa):.2f} | {min(cu):.2f}-{max(cu):.2f} "
                f"| {sum(x >= 1.0 for x in fa)}/{len(fa)} |")
        if base:
            bb = [r[5] / base.get(r[:4], nan)[1] for r in rs]
            line += f" {min(bb):.3f}-{max(bb):.3f} |"
        for _, col in cols:
            xs = [col.get(r[:4], nan)[1] / r[6] for r in rs]
            line += f" {min(xs):.2f}-{max(xs):.2f} | {sum(x >= 1.0 for x in xs)}/{len(xs)} |"
        print(line)


if __name__ == "__main__":
    main()
