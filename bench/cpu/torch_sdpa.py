# PyTorch CPU SDPA on the same problem as flashattn_cpu_bench (B=1, H=16, S=2048, D=128).
import sys, time, torch
import torch.nn.functional as F
threads = int(sys.argv[1])
torch.set_num_threads(threads)
B, H, S, D = 1, 16, 2048, 128
for dt in (torch.float32, torch.bfloat16):
    for causal in (False, True):
        q, k, v = (torch.randn(B, H, S, D, dtype=dt, requires_grad=True) for _ in range(3))
        flops = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter(); o = F.scaled_dot_product_attention(q, k, v, is_causal=causal); ts.append(time.perf_counter() - t0)
        tf = sorted(ts)[1]
        g = torch.randn_like(o)
        tb = []
        for _ in range(3):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            t0 = time.perf_counter(); o.backward(g); tb.append(time.perf_counter() - t0)
        tb = sorted(tb)[1]
        print(f"torch-sdpa {str(dt):15s} causal={int(causal)} threads={threads} fwd {tf*1e3:8.2f} ms {flops/tf/1e9:7.1f} GFLOP/s  bwd {tb*1e3:8.2f} ms {2.5*flops/tb/1e9:7.1f} GFLOP/s", flush=True)
