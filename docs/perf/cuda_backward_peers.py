# Peer timings for docs/perf/cuda_backward.md: SDPA's flash and cuDNN backward
# on the shapes of test_backward_bench (bf16, B*S = 16384, H*D = 2048), CUDA
# events, median of 10 after 3 warm-ups; backward TFLOP/s = 2.5 x forward FLOPs.
import os
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

seqs = [int(s) for s in os.environ.get("FA_BENCH_SEQS", "1024,4096").split(",")]
for d in [int(x) for x in os.environ.get("FA_BENCH_DIMS", "64,128").split(",")]:
    for causal in (False, True):
        for S in seqs:
            H, B = 2048 // d, 16384 // S
            q, k, v = (torch.randn(B, H, S, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            g = torch.randn(B, H, S, d, device="cuda", dtype=torch.bfloat16)
            flops = 2.5 * 4 * B * H * S * S * d / (2 if causal else 1)
            for name, be in (("fa2", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                try:
                    with sdpa_kernel(be):
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        ts = []
                        for i in range(13):
                            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                            a.record()
                            torch.autograd.grad(o, (q, k, v), g, retain_graph=True)
                            b.record()
                            torch.cuda.synchronize()
                            if i >= 3:
                                ts.append(a.elapsed_time(b))
                    ms = sorted(ts)[len(ts) // 2]
                    print(f"BENCH {d} {int(causal)} {S} {B} {H} | {name} {flops / ms / 1e9:.1f} {ms:.3f}", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"BENCH {d} {int(causal)} {S} {B} {H} | {name} failed: {e}", flush=True)
