#!/usr/bin/env python3
"""Tests of the flashattn command-line tool, run by CTest:

    python3 test_cli.py <path to flashattn> <test name>

Each test runs the real binary on small problems with fresh random inputs and
checks its exit code and output; the .npy tests compare what it writes with an
fp64 attention computed here in numpy.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

EXE = None


def run(*args, expect_rc=0):
    p = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)
    if expect_rc is not None and expect_rc == "nonzero":
        if p.returncode == 0:
            fail(f"expected a non-zero exit from {args}, got 0\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    elif expect_rc is not None and p.returncode != expect_rc:
        fail(f"expected exit {expect_rc} from {args}, got {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def fail(msg):
    print("FAILED:", msg)
    sys.exit(1)


def expect(cond, msg):
    if not cond:
        fail(msg)


# ---------------------------------------------------------------------------

def test_help():
    for cmd in ([], ["run"], ["bench"], ["check"], ["info"]):
        p = run(*cmd, "--help")
        expect("Usage" in p.stdout, f"--help of {cmd} prints no usage:\n{p.stdout}")
    p = run("--version")
    expect(p.stdout.startswith("flashattn "), f"--version printed {p.stdout!r}")


def test_info():
    p = run("info")
    expect("cpu_flash" in p.stdout and "available" in p.stdout, p.stdout)


def test_run_small():
    for dtype in ("fp32", "bf16", "fp16"):
        p = run("run", "-b", "2", "--heads", "2", "-s", "96", "-d", "32", "--dtype", dtype,
                "--repeat", "1", "--warmup", "0", "--backward", "--device", "cpu")
        expect("result    PASS" in p.stdout, p.stdout)
        expect("FAIL" not in p.stdout, p.stdout)
        for field in ("problem", "device", "backend", "forward", "backward", "GFLOP/s", "seed", "dk", "dv", "dq"):
            expect(field in p.stdout, f"run output lacks {field!r}:\n{p.stdout}")


def test_run_features():
    cases = [
        ["--heads", "4", "--heads-k", "2", "--seqlen-q", "40", "--seqlen-k", "75", "--alignment", "top-left"],
        ["--seqlen-q", "75", "--seqlen-k", "40", "--window", "10,3", "--no-causal", "--alibi"],
        ["--softcap", "2.0", "--window", "16,0", "--heads-k", "1", "--heads", "3"],
    ]
    for extra in cases:
        p = run("run", "-b", "2", "-d", "24", "--dtype", "bf16", "--repeat", "1", "--warmup", "0", "--backward",
                "--device", "cpu", "--samples", "32", *extra)
        expect("result    PASS" in p.stdout, p.stdout)


def attention_fp64(q, k, v, bias=None, causal=True):
    import numpy as np
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    k = np.repeat(k, h // hk, axis=2)
    v = np.repeat(v, h // hk, axis=2)
    s = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
    if bias is not None:
        s = s + bias.astype(np.float64)
    if causal:  # bottom-right aligned
        i = np.arange(sq)[:, None]
        j = np.arange(sk)[None, :]
        s = np.where(j <= i + sk - sq, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    lse = (m + np.log(e.sum(axis=-1, keepdims=True)))[..., 0]
    o = np.einsum("bhij,bjhd->bihd", e / e.sum(axis=-1, keepdims=True), v)
    return o, lse


def bf16_bits(x):
    import numpy as np
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    import numpy as np
    return (bits.astype(np.uint32) << 16).view(np.float32)


def test_npy_roundtrip():
    try:
        import numpy as np
    except ImportError:
        print("numpy not installed: testing .npy files written by hand")
        return npy_roundtrip_without_numpy()
    rng = np.random.default_rng()
    with tempfile.TemporaryDirectory() as tmp:
        f = lambda name: os.path.join(tmp, name)
        b, sq, sk, h, hk, d = 2, 33, 47, 4, 2, 16
        q = rng.standard_normal((b, sq, h, d)).astype(np.float32)
        k = rng.standard_normal((b, sk, hk, d)).astype(np.float32)
        v = rng.standard_normal((b, sk, hk, d)).astype(np.float32)
        bias = rng.standard_normal((1, h, sq, sk)).astype(np.float32)
        # float32, with one file in .npy format 2.0
        np.save(f("q.npy"), q)
        with open(f("k.npy"), "wb") as fh:
            np.lib.format.write_array(fh, k, version=(2, 0))
        np.save(f("v.npy"), v)
        np.save(f("bias.npy"), bias)
        run("run", "--q", f("q.npy"), "--k", f("k.npy"), "--v", f("v.npy"), "--bias", f("bias.npy"),
            "--out", f("o.npy"), "--lse", f("lse.npy"), "--device", "cpu", "--repeat", "1")
        o_ref, lse_ref = attention_fp64(q, k, v, bias)
        o, lse = np.load(f("o.npy")), np.load(f("lse.npy"))
        expect(o.dtype == np.float32 and o.shape == q.shape, f"out: {o.dtype} {o.shape}")
        expect(lse.shape == (b, h, sq), f"lse shape {lse.shape}")
        err = np.abs(o - o_ref).max()
        expect(err <= 1e-4 * np.abs(o_ref).max() + 1e-6, f"fp32 out error {err}")
        expect(np.abs(lse - lse_ref).max() <= 1e-4 * np.abs(lse_ref).max(), "fp32 lse error")

        # float16
        for name, x in (("q16", q), ("k16", k), ("v16", v)):
            np.save(f(name + ".npy"), x.astype(np.float16))
        run("run", "--q", f("q16.npy"), "--k", f("k16.npy"), "--v", f("v16.npy"), "--no-causal",
            "--out", f("o16.npy"), "--device", "cpu", "--repeat", "1")
        o16 = np.load(f("o16.npy"))
        expect(o16.dtype == np.float16, f"fp16 out dtype {o16.dtype}")
        o_ref16, _ = attention_fp64(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16), causal=False)
        expect(np.abs(o16.astype(np.float64) - o_ref16).max() < 1e-2, "fp16 out error")

        # bfloat16 as ml_dtypes saves it: 2-byte void
        for name, x in (("qb", q), ("kb", k), ("vb", v)):
            np.save(f(name + ".npy"), bf16_bits(x).view("V2"))
        run("run", "--q", f("qb.npy"), "--k", f("kb.npy"), "--v", f("vb.npy"), "--out", f("ob.npy"),
            "--device", "cpu", "--repeat", "1")
        ob = np.load(f("ob.npy"))
        expect(ob.dtype.itemsize == 2 and ob.dtype.kind == "V", f"bf16 out dtype {ob.dtype}")
        ob = bf16_to_f32(ob.view(np.uint16))
        o_refb, _ = attention_fp64(*(bf16_to_f32(bf16_bits(x)) for x in (q, k, v)))
        expect(np.abs(ob - o_refb).max() < 5e-2, "bf16 out error")


def npy_roundtrip_without_numpy():
    import array
    import math
    import random
    with tempfile.TemporaryDirectory() as tmp:
        shape = (1, 5, 1, 4)
        n = 20
        data = {name: [random.gauss(0, 1) for _ in range(n)] for name in "qkv"}
        for name, vals in data.items():
            header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 5, 1, 4), }"
            header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
            with open(os.path.join(tmp, name + ".npy"), "wb") as fh:
                fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
                fh.write(array.array("f", vals).tobytes())
        run("run", "--q", os.path.join(tmp, "q.npy"), "--k", os.path.join(tmp, "k.npy"), "--v",
            os.path.join(tmp, "v.npy"), "--no-causal", "--out", os.path.join(tmp, "o.npy"), "--repeat", "1")
        raw = open(os.path.join(tmp, "o.npy"), "rb").read()
        hl = struct.unpack("<H", raw[8:10])[0]
        expect((10 + hl) % 64 == 0 and b"'<f4'" in raw[10:10 + hl], "output header")
        o = array.array("f", raw[10 + hl:])
        q, k, v = data["q"], data["k"], data["v"]
        for i in range(5):
            s = [sum(q[i * 4 + c] * k[j * 4 + c] for c in range(4)) / 2 for j in range(5)]
            m = max(s)
            e = [math.exp(x - m) for x in s]
            for c in range(4):
                ref = sum(e[j] * v[j * 4 + c] for j in range(5)) / sum(e)
                expect(abs(o[i * 4 + c] - ref) < 1e-4, "no-numpy round trip value")


def one_line_error(p, what):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    expect(len(lines) == 1, f"{what}: expected one line on stderr, got {lines!r}")
    expect(lines[0].startswith("flashattn: error: "), f"{what}: {lines[0]!r}")
    return lines[0]


def raw_npy(path, descr, shape, data, fortran=False, version=1):
    """Writes a .npy file by hand, so that malformed ones can be made too."""
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, fortran, "".join(f"{d}, " for d in shape) if len(shape) != 1 else f"{shape[0]},")
    prefix = 10 if version == 1 else 12
    header += " " * (63 - (prefix + len(header)) % 64) + "\n"
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    with open(path, "wb") as fh:
        fh.write(b"\x93NUMPY" + bytes([version, 0]) + size + header.encode() + data)


def test_npy_errors():
    # Files written by hand: no numpy needed.
    with tempfile.TemporaryDirectory() as tmp:
        f = lambda name: os.path.join(tmp, name)
        shape = (1, 8, 2, 4)
        data = struct.pack("<64f", *[0.25 * (i % 7) - 0.7 for i in range(64)])
        raw_npy(f("ok.npy"), "<f4", shape, data)
        raw_npy(f("fortran.npy"), "<f4", shape, data, fortran=True)
        raw_npy(f("big.npy"), ">f4", shape, data)
        raw_npy(f("f64.npy"), "<f8", shape, data + data)
        raw_npy(f("rank3.npy"), "<f4", shape[1:], data)
        raw_npy(f("trunc.npy"), "<f4", shape, data[:-4])
        raw_npy(f("v3.npy"), "<f4", shape, data, version=3)
        with open(f("junk.npy"), "wb") as fh:
            fh.write(b"not a numpy file at all")
        with open(f("badheader.npy"), "wb") as fh:
            fh.write(b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n")
        # The good file is accepted (and its shape is used).
        p = run("run", "--q", f("ok.npy"), "--k", f("ok.npy"), "--v", f("ok.npy"), "--repeat", "1", "--device", "cpu")
        expect("B=1 H=2 Sq=8 Sk=8 D=4" in p.stdout, p.stdout)
        for bad, word in (("fortran", "fortran"), ("big", "big-endian"), ("f64", "unsupported dtype"),
                          ("rank3", "expected a (batch"), ("trunc", "data bytes"), ("junk", "not a .npy"),
                          ("v3", "version 3.0"), ("badheader", "malformed"), ("missing", "cannot open")):
            p = run("run", "--q", f(bad + ".npy"), "--k", f("ok.npy"), "--v", f("ok.npy"), expect_rc="nonzero")
            line = one_line_error(p, bad)
            expect(word in line, f"{bad}: message {line!r} lacks {word!r}")


def test_bad_args():
    cases = [
        (["run", "--dtype", "fp64"], "--dtype"),
        (["run", "--window", "3"], "--window"),
        (["run", "--window", "-2,0"], "--window"),
        (["run", "--heads", "5", "--heads-k", "2"], "--heads-k"),
        (["run", "-s", "8", "--headdim", "300", "--device", "cpu"], "head dim"),  # the library's Error
        (["run", "--backend", "fastest"], "--backend"),
        (["run", "--alignment", "middle"], "--alignment"),
        (["run", "--bogus"], "bogus"),
        (["run", "--batch", "notanumber"], "batch"),
        (["run", "--q", "x.npy"], "--k"),
        (["bench", "--causal", "maybe"], "--causal"),
        (["bench", "--device", "tpu"], "--device"),
        (["check", "--dtypes", "int8"], "--dtype"),
        (["frobnicate"], "frobnicate"),
        ([], "subcommand"),
    ]
    for args, word in cases:
        p = run(*args, expect_rc="nonzero")
        line = one_line_error(p, " ".join(args))
        expect(word.lower() in line.lower(), f"{args}: message {line!r} lacks {word!r}")


def test_check():
    p = run("check", "--device", "cpu", "--dtypes", "bf16")
    lines = [l for l in p.stdout.splitlines() if l.startswith(("fwd", "bwd"))]
    expect(len(lines) >= 40, f"check printed only {len(lines)} case lines")
    expect(all(("PASS" in l) or ("SKIP" in l) for l in lines), p.stdout)
    expect(" 0 failed" in p.stdout, p.stdout)


def test_bench():
    with tempfile.TemporaryDirectory() as tmp:
        csv, js = os.path.join(tmp, "b.csv"), os.path.join(tmp, "b.json")
        p = run("bench", "--device", "cpu", "--seqlens", "64,96", "--headdims", "16", "--dtypes", "fp32",
                "--heads", "2", "--repeat", "1", "--backward", "--csv", csv, "--json", js)
        expect("GFLOP/s" in p.stdout and "%peak" in p.stdout, p.stdout)
        rows = open(csv).read().strip().splitlines()
        expect(len(rows) == 1 + 4, f"csv rows: {rows}")  # 2 seqlens x causal both
        expect(rows[0].startswith("seqlen,batch,heads,headdim,causal,dtype,backend,fwd_ms"), rows[0])
        data = json.load(open(js))
        expect(len(data["results"]) == 4, data)
        for r in data["results"]:
            expect(r["fwd_ms"] > 0 and r["bwd_ms"] > 0 and r["backend"] == "cpu_flash", r)


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in TESTS:
        print(f"usage: {sys.argv[0]} <flashattn> <{'|'.join(TESTS)}>")
        sys.exit(2)
    EXE = sys.argv[1]
    TESTS[sys.argv[2]]()
    print("ok")
