"""Side-by-side attention benchmark: flashattn vs PyTorch SDPA's backends.

    python -m flashattn.bench                 # full grid on the GPU
    python -m flashattn.bench --quick         # a few cells
    python -m flashattn.bench --device cpu    # vs PyTorch's CPU SDPA

Every implementation runs in this one process on the same inputs. FLOPs follow the
FlashAttention papers: forward 4·B·H·Sq·Sk·D (halved when causal), backward 2.5×
the forward. GPU times are CUDA events around each call, measured while a sleep
kernel holds the queue so that Python launch overhead is not counted (for any
implementation); the median of the runs after warm-up is reported. A peer that
cannot run a cell (unsupported shape, out of memory, our backward not built yet)
is recorded as n/a with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark compares against torch
    torch = None

import flashattn

GPU_PEERS = ("flash", "cudnn", "efficient", "math")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def parse_list(text: str, conv=int) -> list:
    return [conv(x) for x in text.split(",") if x.strip()]


# --- timing ------------------------------------------------------------------------

class Timer:
    def __init__(self, device: str, warmup: int, reps: int, budget_s: float):
        self.device, self.warmup, self.reps, self.budget_s = device, warmup, reps, budget_s

    def __call__(self, fn: Callable[[int], None]) -> float:
        """Median milliseconds of fn(i), i counting calls (for input rotation)."""
        for i in range(self.warmup):
            fn(i)
        if self.device == "cpu":
            return self._cpu(fn)
        return self._cuda(fn)

    def _cpu(self, fn) -> float:
        times: List[float] = []
        start_all = time.perf_counter()
        for i in range(self.reps):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
            if i >= 2 and time.perf_counter() - start_all > self.budget_s:
                break
        return statistics.median(times)

    def _cuda(self, fn) -> float:
        torch.cuda.synchronize()
        # One timed call to size the run and the sleep that hides launch overhead.
        t0 = time.perf_counter()
        fn(0)
        torch.cuda.synchronize()
        one_s = time.perf_counter() - t0
        reps = max(5, min(self.reps, int(self.budget_s / max(one_s, 1e-6))))
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(reps)]
        # Enqueueing costs well under 1 ms a call; sleep ~1 ms per call (cycles at ~1.5 GHz).
        torch.cuda._sleep(int(min(reps * 1.5e6, 2e9)))
        for i, (a, b) in enumerate(events):
            a.record()
            fn(i)
            b.record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in events)


# --- implementations ---------------------------------------------------------------

class Inputs:
    """q, k, v (B, S, H, D) plus copies to rotate through when they fit in L2, so
    that repeated calls do not read a warm cache."""

    def __init__(self, b, s, h, d, dtype, device, l2_bytes: int):
        one = 3 * b * s * h * d * torch.tensor([], dtype=dtype).element_size()
        copies = 1 if one >= 2 * l2_bytes else min(16, math.ceil(4 * l2_bytes / max(one, 1)))
        gen = torch.Generator(device=device).manual_seed(0)
        self.sets = []
        for _ in range(copies):
            q, k, v = (torch.randn(b, s, h, d, dtype=dtype, device=device, generator=gen) for _ in range(3))
            self.sets.append((q, k, v))
        self.dout = torch.randn(b, s, h, d, dtype=dtype, device=device, generator=gen)

    def get(self, i):
        return self.sets[i % len(self.sets)]


def ours_forward(causal):
    def run(q, k, v):
        return flashattn.flash_attn_func(q, k, v, causal=causal)
    return run


def sdpa_forward(causal, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kind = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH, "cpu": None}[backend]

    def run(q, k, v):
        # Same memory as ours: (B, S, H, D) viewed as (B, H, S, D).
        args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        # SDPA warns about every backend it skips; a cell it cannot run is recorded as n/a.
        warnings.filterwarnings("ignore", message=".*has been runtime disabled", category=UserWarning)
        if kind is None:
            out = torch.nn.functional.scaled_dot_product_attention(*args, is_causal=causal)
        else:
            with sdpa_kernel([kind]):
                out = torch.nn.functional.scaled_dot_product_attention(*args, is_causal=causal)
        return out.transpose(1, 2)
    return run


def measure(timer: Timer, inputs: Inputs, fwd: Callable, direction: str):
    """Returns (ms, first output) for one implementation and direction."""
    if direction == "fwd":
        with torch.no_grad():
            out0 = fwd(*inputs.get(0))

            def call(i):
                fwd(*inputs.get(i))
            return timer(call), out0
    # Backward: one forward per input set (kept), then time backward passes alone.
    graphs = []
    for q, k, v in inputs.sets:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        graphs.append((fwd(*leaves), leaves))
    out0 = graphs[0][0].detach()

    def call(i):
        out, leaves = graphs[i % len(graphs)]
        torch.autograd.grad(out, leaves, inputs.dout, retain_graph=True)
    return timer(call), out0


def flops(b, h, s, d, causal, direction):
    f = 4.0 * b * h * s * s * d
    if causal:
        f /= 2
    return f * (2.5 if direction == "bwd" else 1.0)


# --- the sweep ---------------------------------------------------------------------

def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} threads)"
    except OSError:
        pass
    return platform.machine()


def progress(total: int):
    try:
        from tqdm import tqdm

        return tqdm(total=total, unit="cell", dynamic_ncols=True)
    except ImportError:
        class Simple:
            def __init__(self):
                self.n = 0

            def set_description(self, text):
                self.text = text

            def update(self, k=1):
                self.n += k
                print(f"\r[{self.n}/{total}] {getattr(self, 'text', '')}", end="", file=sys.stderr, flush=True)

            def close(self):
                print(file=sys.stderr)
        return Simple()


def run_grid(args) -> dict:
    device = args.device
    peers = ["cpu"] if device == "cpu" else [p for p in args.peers if p in GPU_PEERS]
    l2 = torch.cuda.get_device_properties(0).L2_cache_size if device == "cuda" else 0
    timer = Timer(device, args.warmup, args.reps, args.budget)
    cells = [(dt, d, causal, s) for dt in args.dtypes for d in args.dims for causal in args.causal
             for s in args.seqlens]
    results = []
    bar = progress(len(cells))
    for dt, d, causal, s in cells:
        dtype = getattr(torch, DTYPES[dt])
        h = max(1, args.hidden // d)
        b = max(1, args.tokens // s)
        bar.set_description(f"{dt} d={d} {'causal' if causal else 'full'} s={s}")
        try:
            inputs = Inputs(b, s, h, d, dtype, device, l2)
        except (RuntimeError, MemoryError) as e:  # out of memory for this cell
            results.append(dict(dtype=dt, d=d, heads=h, batch=b, seqlen=s, causal=causal, error=str(e)))
            bar.update()
            continue
        impls = {"ours": ours_forward(causal)}
        for p in peers:
            impls[p] = sdpa_forward(causal, p)
        for direction in args.directions:
            row = dict(direction=direction, dtype=dt, d=d, heads=h, batch=b, seqlen=s, causal=causal,
                       flops=flops(b, h, s, d, causal, direction), impl={})
            ref_out = None
            for name, fn in impls.items():
                try:
                    ms, out = measure(timer, inputs, fn, direction)
                    entry = dict(ms=ms, tflops=row["flops"] / (ms * 1e-3) / 1e12)
                    if direction == "fwd":
                        # A sanity check that every implementation computes the same thing.
                        if ref_out is None:
                            ref_out = out.float()
                        else:
                            entry["max_abs_diff_vs_ours"] = (out.float() - ref_out).abs().max().item()
                    row["impl"][name] = entry
                except Exception as e:  # a peer that cannot run this cell is n/a, not a crash
                    row["impl"][name] = dict(error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                    if device == "cuda":
                        torch.cuda.empty_cache()
            results.append(row)
        del inputs
        if device == "cuda":
            torch.cuda.empty_cache()
        bar.update()
    bar.close()
    return dict(
        device=torch.cuda.get_device_name(0) if device == "cuda" else cpu_name(),
        device_kind=device, torch=torch.__version__, flashattn=flashattn.__version__,
        cpu_threads=torch.get_num_threads(), tokens=args.tokens, hidden=args.hidden,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), results=results,
        peers=["ours"] + peers,
    )


def fmt(entry: Optional[dict], scale: float) -> str:
    if not entry or "error" in entry:
        return "n/a"
    return f"{entry['tflops'] * scale:.1f}"


def table(report: dict) -> str:
    names = report["peers"]
    peers = names[1:]
    cpu = report["device_kind"] == "cpu"
    unit, scale = ("GFLOP/s", 1e3) if cpu else ("TFLOP/s", 1.0)
    head = (f"{'dir':<4}{'dtype':<6}{'d':>4}{'causal':>7}{'seqlen':>7}{'batch':>6} | "
            + "".join(f"{n:>10}" for n in names) + " | " + "".join(f"{'x' + n:>11}" for n in peers))
    lines = [f"{unit} on {report['device']} (torch {report['torch']}, flashattn {report['flashattn']})",
             head, "-" * len(head)]
    for r in report["results"]:
        if "impl" not in r:
            lines.append(f"{r['dtype']} d={r['d']} s={r['seqlen']}: {r.get('error')}")
            continue
        imp = r["impl"]
        ratios = []
        for p in peers:
            a, b = imp.get("ours", {}), imp.get(p, {})
            ok = "tflops" in a and "tflops" in b
            ratios.append(f"{a['tflops'] / b['tflops']:.2f}" if ok else "n/a")
        lines.append(f"{r['direction']:<4}{r['dtype']:<6}{r['d']:>4}{'yes' if r['causal'] else 'no':>7}"
                     f"{r['seqlen']:>7}{r['batch']:>6} | " + "".join(f"{fmt(imp.get(n), scale):>10}" for n in names)
                     + " | " + "".join(f"{x:>11}" for x in ratios))
    errors = sorted({f"{n}: {e['error']}" for r in report["results"] for n, e in r.get("impl", {}).items()
                     if "error" in e})
    if errors:
        lines.append("n/a reasons:")
        lines += [f"  {e}" for e in errors[:20]]
    return "\n".join(lines)


def plot(report: dict, out_dir: str) -> List[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return []
    files = []
    unit, scale = ("GFLOP/s", 1e3) if report["device_kind"] == "cpu" else ("TFLOP/s", 1.0)
    rows = [r for r in report["results"] if "impl" in r]
    for dt in sorted({r["dtype"] for r in rows}):
        panels = sorted({(r["direction"], r["causal"]) for r in rows if r["dtype"] == dt},
                        key=lambda x: (x[0] != "fwd", x[1]))
        dims = sorted({r["d"] for r in rows if r["dtype"] == dt})
        fig, axes = plt.subplots(len(panels), len(dims), figsize=(4.2 * len(dims), 3.2 * len(panels)),
                                 squeeze=False)
        for pi, (direction, causal) in enumerate(panels):
            for di, d in enumerate(dims):
                ax = axes[pi][di]
                sel = sorted((r for r in rows if r["dtype"] == dt and r["d"] == d
                              and r["direction"] == direction and r["causal"] == causal),
                             key=lambda r: r["seqlen"])
                for name in report["peers"]:
                    xs = [r["seqlen"] for r in sel if "tflops" in r["impl"].get(name, {})]
                    ys = [r["impl"][name]["tflops"] * scale for r in sel if "tflops" in r["impl"].get(name, {})]
                    if xs:
                        ax.plot(xs, ys, marker="o", linewidth=2.5 if name == "ours" else 1.2,
                                label="flashattn" if name == "ours" else f"sdpa:{name}")
                ax.set_xscale("log", base=2)
                ax.set_title(f"{direction} {dt} d={d} {'causal' if causal else 'non-causal'}", fontsize=9)
                ax.set_xlabel("seqlen")
                ax.set_ylabel(unit)
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"flashattn vs PyTorch SDPA on {report['device']}", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        path = os.path.join(out_dir, f"bench_{report['device_kind']}_{dt}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flashattn.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="default: cuda when available, else cpu")
    ap.add_argument("--quick", action="store_true", help="a few cells: d=128, seqlen 1k/4k/16k, bf16")
    ap.add_argument("--dims", default=None, help="head dims, e.g. 64,128,256 (heads = hidden / d)")
    ap.add_argument("--seqlens", default=None, help="e.g. 512,1024,2048,4096,8192,16384")
    ap.add_argument("--dtypes", default=None, help="bf16,fp16 (add fp32 for the fp32 path)")
    ap.add_argument("--causal", default="both", choices=["both", "yes", "no"])
    ap.add_argument("--directions", default="fwd,bwd", help="fwd,bwd")
    ap.add_argument("--peers", default=",".join(GPU_PEERS), help="SDPA backends on CUDA")
    ap.add_argument("--tokens", type=int, default=None, help="batch = tokens / seqlen (GPU default 16384)")
    ap.add_argument("--hidden", type=int, default=2048, help="heads x head dim")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=30, help="at most this many timed runs per measurement")
    ap.add_argument("--budget", type=float, default=0.5, help="seconds per measurement (caps the runs)")
    ap.add_argument("--out", default="bench-results", help="directory for JSON and PNG")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    if torch is None:
        print("flashattn.bench compares against PyTorch: install torch", file=sys.stderr)
        return 2
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu", file=sys.stderr)
        return 2
    default_dims = "128" if args.quick else ("64,128,256" if gpu else "64,128")
    default_seq = ("1024,4096,16384" if gpu else "512,2048") if args.quick else \
        ("512,1024,2048,4096,8192,16384" if gpu else "512,1024,2048")
    default_dt = ("bf16" if gpu else "fp32") if args.quick else ("bf16,fp16" if gpu else "fp32,bf16")
    args.dims = parse_list(args.dims or default_dims)
    args.seqlens = parse_list(args.seqlens or default_seq)
    args.dtypes = parse_list(args.dtypes or default_dt, str)
    for dt in args.dtypes:
        if dt not in DTYPES:
            ap.error(f"unknown dtype {dt!r} (bf16, fp16, fp32)")
    args.causal = {"both": [False, True], "yes": [True], "no": [False]}[args.causal]
    args.directions = parse_list(args.directions, str)
    args.peers = parse_list(args.peers, str)
    if args.tokens is None:
        args.tokens = 16384 if gpu else 4096
    os.makedirs(args.out, exist_ok=True)

    report = run_grid(args)
    text = table(report)
    print(text)
    path = os.path.join(args.out, f"bench_{args.device}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {path}")
    if not args.no_plot:
        for p in plot(report, args.out):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
