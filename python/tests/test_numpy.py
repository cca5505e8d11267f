"""numpy inputs (CPU backend) against the float64 oracle: every option, odd sizes,
both layouts, varlen with empty sequences, the packed flash_attn forms, the
explicit backward, and the error mapping. Runs without torch."""

import numpy as np
import pytest

import flashattn
import ref_numpy as ref

# Error of the CPU kernels in each dtype against float64, relative to max|v|.
TOL = {np.float32: 2e-5, np.float16: 4e-3}


def rand(rng, shape, dtype=np.float32, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def qkv(rng, b=2, sq=9, sk=13, h=4, hk=None, d=16, dtype=np.float32):
    hk = h if hk is None else hk
    return rand(rng, (b, sq, h, d), dtype), rand(rng, (b, sk, hk, d), dtype), rand(rng, (b, sk, hk, d), dtype)


def poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def check_forward(rng, q, k, v, dtype=np.float32, **opts):
    out = poisoned(q.shape, q.dtype)
    lse_shape = (q.shape[1], q.shape[0]) if "cu_seqlens_q" in opts else (q.shape[0], q.shape[2], q.shape[1])
    lse = poisoned(lse_shape, np.float32)
    ref_opts = dict(opts)
    for key in ("max_seqlen_q", "max_seqlen_k"):
        ref_opts.pop(key, None)
    if "softmax_scale" in ref_opts:
        ref_opts["scale"] = ref_opts.pop("softmax_scale")
    r = flashattn.forward(q, k, v, out=out, lse=lse, **opts)
    assert r.out is out and r.lse is lse
    o_ref, lse_ref = ref.attention(q, k, v, **ref_opts)
    tol = TOL[dtype] * max(1.0, float(np.abs(v.astype(np.float64)).max()))
    assert ref.max_err(out, o_ref) <= tol, ref.max_err(out, o_ref)
    assert ref.max_err(lse, lse_ref) <= 10 * TOL[dtype] * max(1.0, float(np.abs(lse_ref[np.isfinite(lse_ref)]).max(initial=1.0)))
    return out, lse


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("causal,alignment,sq,sk", [
    (False, "bottom_right", 9, 13), (True, "bottom_right", 9, 13), (True, "bottom_right", 13, 9),
    (True, "top_left", 9, 13), (True, "top_left", 13, 9), (True, "bottom_right", 1, 17)])
def test_causal_alignment(rng, dtype, causal, alignment, sq, sk):
    q, k, v = qkv(rng, sq=sq, sk=sk, dtype=dtype)
    out, lse = check_forward(rng, q, k, v, dtype, causal=causal, alignment=alignment)
    if causal and sq > sk and alignment == "bottom_right":
        # Queries above the diagonal see no key: O = 0, lse = -inf, never NaN.
        assert np.all(out[:, : sq - sk] == 0) and np.all(np.isneginf(lse[:, :, : sq - sk]))


@pytest.mark.parametrize("window,causal", [((3, 2), False), ((0, 0), False), ((4, -1), True), ((-1, 1), False)])
@pytest.mark.parametrize("alignment", ["bottom_right", "top_left"])
def test_window(rng, window, causal, alignment):
    q, k, v = qkv(rng, sq=11, sk=17)
    check_forward(rng, q, k, v, window=window, causal=causal, alignment=alignment)


@pytest.mark.parametrize("softcap", [0.5, 5.0])
def test_softcap(rng, softcap):
    q, k, v = qkv(rng)
    q *= 3  # large scores so the cap bites
    check_forward(rng, q, k, v, softcap=softcap, causal=True)


@pytest.mark.parametrize("per_batch", [False, True])
def test_alibi(rng, per_batch):
    q, k, v = qkv(rng, sq=12, sk=15)
    slopes = rng.uniform(0.05, 1.0, size=(2, 4) if per_batch else (4,)).astype(np.float32)
    check_forward(rng, q, k, v, alibi_slopes=slopes, causal=True)
    check_forward(rng, q, k, v, alibi_slopes=slopes, alignment="top_left")


@pytest.mark.parametrize("bias_shape", [(2, 4, 9, 13), (1, 4, 9, 13), (2, 1, 9, 13), (1, 1, 9, 13), (9, 13)])
@pytest.mark.parametrize("bias_dtype", ["q", np.float32])
def test_bias(rng, bias_shape, bias_dtype):
    q, k, v = qkv(rng, dtype=np.float16 if bias_dtype == "q" else np.float32)
    bias = rand(rng, bias_shape, q.dtype if bias_dtype == "q" else bias_dtype, scale=2.0)
    check_forward(rng, q, k, v, q.dtype.type, bias=bias, causal=True)


def test_broadcast_view_bias(rng):
    # A stride-0 broadcast view (np.broadcast_to) is used without a copy.
    q, k, v = qkv(rng)
    row = rand(rng, (1, 1, 1, 13))
    bias = np.broadcast_to(row, (2, 4, 9, 13))
    assert bias.strides[2] == 0
    check_forward(rng, q, k, v, bias=bias)


@pytest.mark.parametrize("h,hk", [(6, 2), (6, 1), (4, 4)])
def test_gqa(rng, h, hk):
    q, k, v = qkv(rng, h=h, hk=hk)
    check_forward(rng, q, k, v, causal=True)
    out = flashattn.flash_attn_func(q, k, v, causal=True)
    # GQA equals MHA with K/V heads repeated.
    out_rep = flashattn.flash_attn_func(q, np.repeat(k, h // hk, axis=2), np.repeat(v, h // hk, axis=2), causal=True)
    np.testing.assert_allclose(out, out_rep, atol=1e-6)


@pytest.mark.parametrize("b,sq,sk,d", [(1, 1, 1, 1), (3, 17, 1, 7), (1, 1, 17, 80), (2, 33, 29, 256), (1, 100, 100, 64)])
def test_odd_sizes(rng, b, sq, sk, d):
    q, k, v = qkv(rng, b=b, sq=sq, sk=sk, h=3, d=d)
    check_forward(rng, q, k, v, causal=sq <= sk)
    check_forward(rng, q, k, v, softmax_scale=0.3)


def test_bhsd_layout_in_place(rng):
    # (B, H, S, D) buffers viewed as (B, S, H, D) without a copy: the kernel reads and
    # writes through the strides, so the output buffer itself is filled.
    qb, kb, vb = (rand(rng, (2, 4, n, 16)) for n in (9, 13, 13))
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (qb, kb, vb))
    assert not q.flags.c_contiguous
    out_buf = poisoned((2, 4, 9, 16), np.float32)
    flashattn.forward(q, k, v, out=out_buf.transpose(0, 2, 1, 3), causal=True)
    o_ref, _ = ref.attention(q, k, v, causal=True)
    assert ref.max_err(out_buf.transpose(0, 2, 1, 3), o_ref) < 2e-5
    # Allocated outputs keep the caller's layout.
    out = flashattn.flash_attn_func(q, k, v)
    assert out.strides == q.strides


def test_read_only_inputs(rng):
    q, k, v = qkv(rng)
    for t in (q, k, v):
        t.setflags(write=False)
    check_forward(rng, q, k, v)


def varlen_problem(rng, lens_q, lens_k, h=4, hk=2, d=16, dtype=np.float32):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = rand(rng, (cu_q[-1], h, d), dtype)
    k = rand(rng, (cu_k[-1], hk, d), dtype)
    v = rand(rng, (cu_k[-1], hk, d), dtype)
    return q, k, v, cu_q, cu_k, max(lens_q), max(lens_k)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_with_empty_sequences(rng, causal):
    # Sequence 1 is empty on both sides; sequence 3 has queries but no keys.
    q, k, v, cu_q, cu_k, mq, mk = varlen_problem(rng, [5, 0, 9, 4, 1], [7, 0, 6, 0, 3])
    out, lse = check_forward(rng, q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq,
                             max_seqlen_k=mk, causal=causal)
    rows = slice(cu_q[3], cu_q[4])
    assert np.all(out[rows] == 0) and np.all(np.isneginf(lse[:, rows]))


def test_varlen_bias_alibi_window(rng):
    q, k, v, cu_q, cu_k, mq, mk = varlen_problem(rng, [6, 3, 8], [6, 9, 5])
    bias = rand(rng, (3, 1, mq, mk))
    slopes = rng.uniform(0.1, 0.5, 4).astype(np.float32)
    check_forward(rng, q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq, max_seqlen_k=mk,
                  bias=bias, alibi_slopes=slopes, window=(2, 1), softcap=2.0)


def test_varlen_matches_per_sequence(rng):
    q, k, v, cu_q, cu_k, mq, mk = varlen_problem(rng, [4, 7], [9, 5])
    out, lse, probs = flashattn.flash_attn_varlen_func(q, k, v, cu_q, cu_k, mq, mk, causal=True,
                                                       return_attn_probs=True)
    assert probs is None and lse.shape == (4, q.shape[0])
    for b in range(2):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        one = flashattn.flash_attn_func(q[None, qs], k[None, ks], v[None, ks], causal=True)
        np.testing.assert_allclose(out[qs], one[0], atol=1e-6)


def test_packed_forms(rng):
    qkv_ = rand(rng, (2, 10, 3, 4, 16))
    out = flashattn.flash_attn_qkvpacked_func(qkv_, causal=True)
    out_ref = flashattn.flash_attn_func(qkv_[:, :, 0], qkv_[:, :, 1], qkv_[:, :, 2], causal=True)
    np.testing.assert_array_equal(out, out_ref)
    o_ref, _ = ref.attention(qkv_[:, :, 0], qkv_[:, :, 1], qkv_[:, :, 2], causal=True)
    assert ref.max_err(out, o_ref) < 2e-5

    q = rand(rng, (2, 7, 4, 16))
    kv = rand(rng, (2, 10, 2, 2, 16))
    out, lse, none = flashattn.flash_attn_kvpacked_func(q, kv, window_size=(3, 3), return_attn_probs=True)
    assert none is None and lse.shape == (2, 4, 7)
    o_ref, lse_ref = ref.attention(q, kv[:, :, 0], kv[:, :, 1], window=(3, 3))
    assert ref.max_err(out, o_ref) < 2e-5 and ref.max_err(lse, lse_ref) < 1e-4

    cu = np.array([0, 3, 3, 10], dtype=np.int32)
    vqkv = rand(rng, (10, 3, 4, 16))
    out = flashattn.flash_attn_varlen_qkvpacked_func(vqkv, cu, 7, causal=True)
    o_ref, _ = ref.attention(vqkv[:, 0], vqkv[:, 1], vqkv[:, 2], causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu)
    assert ref.max_err(out, o_ref) < 2e-5

    vq = rand(rng, (10, 4, 16))
    vkv = rand(rng, (12, 2, 1, 16))
    cu_k = np.array([0, 5, 6, 12], dtype=np.int32)
    out = flashattn.flash_attn_varlen_kvpacked_func(vq, vkv, cu, cu_k, 7, 6, softcap=3.0)
    o_ref, _ = ref.attention(vq, vkv[:, 0], vkv[:, 1], softcap=3.0, cu_seqlens_q=cu, cu_seqlens_k=cu_k)
    assert ref.max_err(out, o_ref) < 2e-5


def test_attention_api(rng):
    q, k, v = qkv(rng, sq=13, sk=9)
    out, lse = flashattn.attention(q, k, v, causal=True, alignment="top_left", scale=0.2, return_lse=True)
    o_ref, lse_ref = ref.attention(q, k, v, causal=True, alignment="top_left", scale=0.2)
    assert ref.max_err(out, o_ref) < 2e-5 and ref.max_err(lse, lse_ref) < 1e-4
    for name in ("cpu_reference", "cpu_flash"):
        assert flashattn.backend_available(name)
        o = flashattn.attention(q, k, v, backend=name)
        assert ref.max_err(o, ref.attention(q, k, v)[0]) < 2e-5
    assert flashattn.forward(q, k, v, backend="cpu_reference").backend == "cpu_reference"


# --- backward (explicit; numpy has no autograd) -------------------------------------

@pytest.mark.parametrize("opts", [
    dict(causal=True),
    dict(causal=True, alignment="top_left", window=(3, -1)),
    dict(softcap=2.0, window=(4, 2)),
    dict(alibi_slopes="per_head", causal=True),
    dict(bias=(1, 4, 9, 13)),
    dict(bias=(2, 1, 9, 13), softcap=1.5, causal=True),
], ids=["causal", "topleft-window", "softcap-window", "alibi", "bias-1H", "bias-B1-softcap"])
@pytest.mark.parametrize("hk", [4, 2])
def test_backward(rng, opts, hk):
    q, k, v = qkv(rng, sq=9, sk=13, h=4, hk=hk)
    opts = dict(opts)
    if opts.get("alibi_slopes") == "per_head":
        opts["alibi_slopes"] = rng.uniform(0.1, 0.8, 4).astype(np.float32)
    if "bias" in opts:
        opts["bias"] = rand(rng, opts["bias"])
    dout = rand(rng, q.shape)
    fwd = flashattn.forward(q, k, v, **opts)
    grads = [poisoned(t.shape, t.dtype) for t in (q, k, v)]
    dbias = None if "bias" not in opts else poisoned(opts["bias"].shape, np.float32)
    r = flashattn.backward(q, k, v, fwd.out, dout, fwd.lse, dq=grads[0], dk=grads[1], dv=grads[2],
                           dbias=dbias, **opts)
    ref_opts = dict(opts)
    want = ref.attention_grads(q, k, v, dout, **ref_opts)
    for got, exp, name in zip((r.dq, r.dk, r.dv, r.dbias), want, ("dq", "dk", "dv", "dbias")):
        if exp is None:
            assert got is None
            continue
        scale = max(1.0, float(np.abs(exp).max()))
        assert ref.max_err(got, exp) <= 5e-5 * scale, (name, ref.max_err(got, exp))


def test_backward_varlen_with_empty(rng):
    q, k, v, cu_q, cu_k, mq, mk = varlen_problem(rng, [5, 0, 6, 3], [4, 0, 8, 0])
    opts = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq, max_seqlen_k=mk, causal=True)
    dout = rand(rng, q.shape)
    fwd = flashattn.forward(q, k, v, **opts)
    r = flashattn.backward(q, k, v, fwd.out, dout, fwd.lse, **opts)
    want = ref.attention_grads(q, k, v, dout, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True)
    for got, exp in zip((r.dq, r.dk, r.dv), want[:3]):
        assert ref.max_err(got, exp) <= 5e-5 * max(1.0, float(np.abs(exp).max()))


def test_reference_gradients_match_finite_differences(rng):
    # The oracle's analytic backward, checked once against central differences.
    q, k, v = (t.astype(np.float64) for t in qkv(rng, b=1, sq=4, sk=5, h=2, hk=1, d=3))
    bias = rng.standard_normal((1, 2, 4, 5))
    slopes = np.array([0.3, 0.7])
    opts = dict(bias=bias, alibi_slopes=slopes, softcap=1.2, window=(2, 1))
    dout = rng.standard_normal(q.shape)
    grads = ref.attention_grads(q, k, v, dout, **opts)
    loss = lambda q_, k_, v_, b_: float((ref.attention(q_, k_, v_, **{**opts, "bias": b_})[0] * dout).sum())
    args = [q, k, v, bias]
    for idx, g in enumerate(grads):
        num = np.zeros_like(args[idx])
        for pos in np.ndindex(args[idx].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[idx][pos] += 1e-6
            minus[idx][pos] -= 1e-6
            num[pos] = (loss(*plus) - loss(*minus)) / 2e-6
        np.testing.assert_allclose(g, num, atol=1e-6, rtol=1e-5)


# --- errors: the C++ message, as ValueError / TypeError ----------------------------

def test_error_wrong_dtype(rng):
    q, k, v = qkv(rng)
    with pytest.raises(TypeError, match=r"k: dtype float16 does not match q's dtype \(float32\)"):
        flashattn.flash_attn_func(q, k.astype(np.float16), v)
    with pytest.raises(TypeError, match="q: dtype float64 is not supported"):
        flashattn.flash_attn_func(q.astype(np.float64), k, v)


def test_error_non_unit_last_stride(rng):
    q, k, v = qkv(rng, d=32)
    with pytest.raises(ValueError, match=r"q: the last \(head-dim\) stride must be 1, got 2"):
        flashattn.flash_attn_func(q[..., ::2], k[..., :16], v[..., :16])


def test_error_shapes_and_options(rng):
    q, k, v = qkv(rng, h=4, hk=3)
    with pytest.raises(ValueError, match="must divide q's 4 heads"):
        flashattn.flash_attn_func(q, k, v)
    q, k, v = qkv(rng)
    with pytest.raises(ValueError, match="window_left: must be >= -1"):
        flashattn.flash_attn_func(q, k, v, window_size=(-2, 0))
    with pytest.raises(ValueError, match="bias: shape"):
        flashattn.flash_attn_func(q, k, v, bias=rand(rng, (2, 4, 9, 12)))
    with pytest.raises(ValueError, match="cu_seqlens_q must be non-decreasing"):
        flashattn.flash_attn_varlen_func(q[0], k[0], v[0], np.array([0, 5, 3], np.int32),
                                         np.array([0, 5, 9], np.int32), 5, 9)
    with pytest.raises(TypeError, match="cu_seqlens_q: dtype int64 is not supported"):
        flashattn.flash_attn_varlen_func(q[0], k[0], v[0], np.array([0, 9], np.int64),
                                         np.array([0, 13], np.int32), 9, 13)
    with pytest.raises(TypeError, match="expected a numpy array or a torch tensor"):
        flashattn.flash_attn_func(q.tolist(), k, v)
    with pytest.raises(ValueError, match="alignment"):
        flashattn.attention(q, k, v, alignment="middle")


def test_dropout_and_paging_are_refused(rng):
    q, k, v = qkv(rng)
    with pytest.raises(NotImplementedError, match="dropout_p=0.1 is not supported"):
        flashattn.flash_attn_func(q, k, v, dropout_p=0.1)
    with pytest.raises(NotImplementedError, match="block_table"):
        flashattn.flash_attn_varlen_func(q[0], k[0], v[0], np.array([0, 9], np.int32),
                                         np.array([0, 13], np.int32), 9, 13, block_table=np.zeros(1))


def test_version_and_backends():
    assert flashattn.__version__ == "0.1.0"
    names = flashattn.backend_names()
    assert "cpu_flash" in names and "cuda_sm90" in names
    with pytest.raises(ValueError, match="unknown name"):
        flashattn.backend_available("tpu")
