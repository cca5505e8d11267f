"""Load balance of the Hopper forward's static tile orders (src/cuda/sm90/scheduler.cuh).

Model: a tile costs (key blocks it visits + a fixed overhead) units; CTA i of 132 takes
its tiles in round-robin order; efficiency = mean CTA work / max CTA work. Prints, per
grid cell of docs/perf/cuda_sm90.md, the LPT order of v1..v5, the LPT snake, head-major
and block pairs (see scheduler.cuh for the orders)."""
SMS = 132


def work(m, causal, bm, bn, s):
    return (min((m + 1) * bm, s) - 1) // bn + 1 if causal else (s + bn - 1) // bn


def slots(order, M, BH):
    """Per-slot tile lists, in the order tiles are dealt: list of lists (one per unit)."""
    if order == "paired":
        per = M // 2
        units = [[M - 1 - i, i] for _ in range(BH) for i in range(per)]
        units += [[per] for _ in range(BH)] if M % 2 else []
        return units
    if order == "head_major":
        return [[M - 1 - r] for _ in range(BH) for r in range(M)]
    return [[M - 1 - r] for r in range(M) for _ in range(BH)]  # lpt, lpt_snake


def efficiency(order, D, causal, S, overhead=1.5):
    bm, bn = (192, 128) if D == 64 else (128, 128 if D == 128 else 64)
    B, H = 16384 // S, 2048 // D
    M = (S + bm - 1) // bm
    units = slots(order, M, B * H)
    grid = min(SMS, len(units))
    load = [0.0] * grid
    for u, tiles in enumerate(units):
        k, i = divmod(u, grid)
        cta = grid - 1 - i if order == "lpt_snake" and k % 2 else i
        load[cta] += sum(work(m, causal, bm, bn, S) + overhead for m in tiles)
    return sum(load) / grid / max(load)


if __name__ == "__main__":
    orders = ("lpt", "lpt_snake", "head_major", "paired")
    print("D causal S " + " ".join(orders))
    for D in (64, 128, 256):
        for causal in (0, 1):
            for S in (512, 1024, 2048, 4096, 8192, 16384):
                print(D, causal, S, " ".join("%.3f" % efficiency(o, D, causal, S) for o in orders))
