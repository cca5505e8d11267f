"""torch CPU tensors: forward vs the float64 oracle, autograd (q, k, v, bias) vs the
oracle's gradients, the custom ops (opcheck), torch.compile(fullgraph=True),
gradcheck, determinism and the error mapping. Skipped where torch is absent."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import flashattn  # noqa: E402
import ref_numpy as ref  # noqa: E402
import ref_torch  # noqa: E402
from flashattn import flash_attn_func, flash_attn_varlen_func  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def randn(rng, shape, dtype=torch.float32, requires_grad=False, scale=1.0):
    t = torch.from_numpy(scale * rng.standard_normal(shape)).to(dtype)
    return t.requires_grad_(requires_grad)


def qkv(rng, b=2, sq=9, sk=13, h=4, hk=2, d=16, dtype=torch.float32, requires_grad=False):
    return (randn(rng, (b, sq, h, d), dtype, requires_grad),
            randn(rng, (b, sk, hk, d), dtype, requires_grad),
            randn(rng, (b, sk, hk, d), dtype, requires_grad))


def within_rule(ours, naive, exact, what):
    ref_torch.assert_within_rule(ours, naive, exact, what, fp32_rtol=2e-5)


CASES = {
    "plain": dict(),
    "causal": dict(causal=True),
    "causal-topleft": dict(causal=True, alignment="top_left"),
    "window": dict(window=(3, 2)),
    "local-causal": dict(window=(4, -1), causal=True),
    "softcap": dict(softcap=2.0, causal=True),
    "alibi": dict(alibi_slopes="per_head", causal=True),
    "bias": dict(bias=(2, 4, 9, 13)),
    "bias-broadcast": dict(bias=(1, 1, 9, 13), causal=True),
    "everything": dict(bias=(2, 1, 9, 13), alibi_slopes="per_head", softcap=3.0, window=(5, 1)),
}


def materialize(rng, opts, dtype):
    opts = dict(opts)
    if opts.get("alibi_slopes") == "per_head":
        opts["alibi_slopes"] = torch.from_numpy(rng.uniform(0.05, 0.6, 4).astype(np.float32))
    if "bias" in opts:
        opts["bias"] = randn(rng, opts["bias"], dtype, requires_grad=True)
    return opts


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_autograd(rng, case, dtype):
    q, k, v = qkv(rng, dtype=dtype, requires_grad=True)
    opts = materialize(rng, CASES[case], dtype)
    out, lse = flashattn.attention(q, k, v, return_lse=True, **opts)
    assert out.dtype == dtype and lse.dtype == torch.float32 and lse.shape == (2, 4, 9)
    dout = randn(rng, out.shape, dtype)
    out.backward(dout)

    np_opts = {key: (val.detach() if torch.is_tensor(val) else val) for key, val in opts.items()}
    o_ref, lse_ref = ref.attention(q, k, v, **np_opts)
    grads_ref = ref.attention_grads(q, k, v, dout, **np_opts)
    # Same-precision naive baseline (forward and its autograd gradients).
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    b_naive = np_opts.get("bias")
    if b_naive is not None:
        b_naive = b_naive.clone().requires_grad_()
    naive = ref_torch.attention(*leaves, **{**np_opts, "bias": b_naive})
    naive.backward(dout)

    within_rule(out, naive, torch.from_numpy(o_ref), "out")
    assert ref.max_err(lse, lse_ref) < (1e-4 if dtype == torch.float32 else 3e-2)
    got = [q.grad, k.grad, v.grad] + ([opts["bias"].grad] if "bias" in opts else [])
    nv = [t.grad for t in leaves] + ([b_naive.grad] if "bias" in opts else [])
    for g, n, r, name in zip(got, nv, grads_ref, ("dq", "dk", "dv", "dbias")):
        assert g is not None and g.shape == n.shape and g.dtype == dtype, name
        within_rule(g, n, torch.from_numpy(r), name)


def test_bhsd_layout_autograd(rng):
    # Leaves in (B, H, S, D); the op sees transposed views and uses their strides.
    qb, kb, vb = (randn(rng, (2, 4, n, 16), requires_grad=True) for n in (9, 13, 13))
    out = flash_attn_func(qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2), causal=True)
    assert out.stride() == qb.transpose(1, 2).stride()  # no hidden copy of q's layout
    dout = randn(rng, out.shape)
    out.backward(dout)
    want = ref.attention_grads(qb.transpose(1, 2), kb.transpose(1, 2), vb.transpose(1, 2), dout, causal=True)
    for leaf, w in zip((qb, kb, vb), want):
        assert ref.max_err(leaf.grad.transpose(1, 2), w) < 5e-5


def test_varlen_autograd_with_empty(rng):
    lens_q, lens_k = [5, 0, 6, 3], [4, 0, 8, 0]
    cu_q = torch.tensor(np.concatenate([[0], np.cumsum(lens_q)]), dtype=torch.int32)
    cu_k = torch.tensor(np.concatenate([[0], np.cumsum(lens_k)]), dtype=torch.int32)
    q = randn(rng, (int(cu_q[-1]), 4, 8), requires_grad=True)
    k = randn(rng, (int(cu_k[-1]), 2, 8), requires_grad=True)
    v = randn(rng, (int(cu_k[-1]), 2, 8), requires_grad=True)
    out, lse, none = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 6, 8, causal=True, return_attn_probs=True)
    assert none is None and lse.shape == (4, q.shape[0])
    o_ref, lse_ref = ref.attention(q, k, v, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert ref.max_err(out, o_ref) < 2e-5 and ref.max_err(lse, lse_ref) < 1e-4
    dout = randn(rng, out.shape)
    out.backward(dout)
    want = ref.attention_grads(q, k, v, dout, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    for leaf, w in zip((q, k, v), want):
        assert ref.max_err(leaf.grad, w) < 5e-5


def test_packed_autograd(rng):
    qkv_ = randn(rng, (2, 10, 3, 4, 16), requires_grad=True)
    out = flashattn.flash_attn_qkvpacked_func(qkv_, causal=True, softcap=4.0)
    dout = randn(rng, out.shape)
    out.backward(dout)
    parts = [qkv_[:, :, i].detach() for i in range(3)]
    want = ref.attention_grads(*parts, dout, causal=True, softcap=4.0)
    assert ref.max_err(qkv_.grad, np.stack(want[:3], axis=2)) < 5e-5


def test_sum_loss_broadcast_gradient(rng):
    # out.sum() hands the backward a stride-0 gradient; it must still work.
    q, k, v = qkv(rng, requires_grad=True)
    flash_attn_func(q, k, v).sum().backward()
    want = ref.attention_grads(q, k, v, np.ones(q.shape))
    assert ref.max_err(q.grad, want[0]) < 5e-5


def test_deterministic_is_bitwise(rng):
    q, k, v = qkv(rng, sq=40, sk=40, requires_grad=True)
    dout = randn(rng, q.shape)
    grads = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        flash_attn_func(q, k, v, causal=True, deterministic=True).backward(dout)
        grads.append([t.grad.clone() for t in (q, k, v)])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:Input #")  # fp32 gradcheck is intended, tolerances widened
def test_gradcheck_fp32(rng):
    q, k, v = qkv(rng, b=1, sq=4, sk=5, h=2, hk=1, d=4, requires_grad=True)
    bias = randn(rng, (1, 2, 4, 5), requires_grad=True)
    f = lambda q_, k_, v_, b_: flash_attn_func(q_, k_, v_, causal=True, softcap=2.0, bias=b_)
    assert torch.autograd.gradcheck(f, (q, k, v, bias), eps=1e-3, atol=5e-3, rtol=5e-3)


def test_opcheck(rng):
    q, k, v = qkv(rng, requires_grad=True)
    bias = randn(rng, (1, 4, 9, 13), requires_grad=True)
    args = (q, k, v, bias, None, None, None, 0, 0, None, True, "bottom_right", -1, -1, 0.0, False, "automatic")
    torch.library.opcheck(torch.ops.flashattn.fwd.default, args)
    out, lse = torch.ops.flashattn.fwd(*args)
    dout = randn(rng, out.shape)
    bargs = (dout, q.detach(), k.detach(), v.detach(), out.detach(), lse, bias.detach(), None, None, None,
             0, 0, None, True, "bottom_right", -1, -1, 0.0, False, True, "automatic")
    # The backward op has no derivative of its own (no double backward), so only its
    # schema and fake kernel are checked.
    torch.library.opcheck(torch.ops.flashattn.bwd.default, bargs,
                          test_utils=("test_schema", "test_faketensor"))


class TinyAttention(torch.nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, s, d = x.shape
        qkv = self.qkv(x).view(b, s, 3, self.heads, d // self.heads)
        out = flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)
        return self.proj(out.reshape(b, s, d))


def run_compile_check(device, rng, backend="inductor"):
    torch._dynamo.reset()
    model = TinyAttention().to(device)
    x = torch.from_numpy(rng.standard_normal((2, 11, 32))).float().to(device)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend=backend)  # raises on any graph break
    out = compiled(x)
    out.square().sum().backward()
    torch.testing.assert_close(out, eager_out, atol=1e-5, rtol=1e-5)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)


def test_torch_compile_fullgraph(rng):
    # aot_eager traces through dynamo and AOTAutograd (fake kernels, autograd
    # registration) without inductor's minute-long C++ build on CPU; the GPU test
    # uses inductor.
    run_compile_check("cpu", rng, backend="aot_eager")


def test_reference_gradients_match_torch_autograd(rng):
    # The numpy oracle's analytic gradients agree with float64 torch autograd.
    q, k, v = qkv(rng, dtype=torch.float64, requires_grad=True)
    bias = randn(rng, (2, 1, 9, 13), torch.float64, requires_grad=True)
    slopes = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    opts = dict(alibi_slopes=slopes, softcap=2.5, window=(4, 2), alignment="top_left")
    out = ref_torch.attention(q, k, v, bias=bias, **opts)
    dout = randn(rng, out.shape, torch.float64)
    out.backward(dout)
    o_np, _ = ref.attention(q, k, v, bias=bias.detach(), **opts)
    assert ref.max_err(out, o_np) < 1e-12
    want = ref.attention_grads(q, k, v, dout, bias=bias.detach(), **opts)
    for t, w in zip((q, k, v, bias), want):
        assert ref.max_err(t.grad, w) < 1e-12


def test_errors(rng):
    q, k, v = qkv(rng)
    with pytest.raises(TypeError, match=r"k: dtype bfloat16 does not match q's dtype \(float32\)"):
        flash_attn_func(q, k.bfloat16(), v)
    wide = randn(rng, (2, 9, 4, 32))
    with pytest.raises(ValueError, match=r"q: the last \(head-dim\) stride must be 1, got 2"):
        flash_attn_func(wide[..., ::2], k, v)
    with pytest.raises(NotImplementedError, match="dropout"):
        flash_attn_func(q, k, v, dropout_p=0.5)
    with pytest.raises(TypeError, match="q: dtype float64 is not supported"):
        flash_attn_func(q.double(), k.double(), v.double())


def test_no_grad_and_inference_mode(rng):
    q, k, v = qkv(rng, requires_grad=True)
    with torch.inference_mode():
        out = flash_attn_func(q, k, v)
    assert ref.max_err(out, ref.attention(q, k, v)[0]) < 2e-5
    r = flashattn.forward(q, k, v)  # the thin wrapper detaches, no autograd
    assert not r.out.requires_grad and r.backend == "cpu_flash"
