"""float64 numpy oracle: plain softmax(scale·QKᵀ [softcap] + bias − ALiBi, mask)·V and
its analytic gradients, written from the semantics in src/mask.hpp, nothing shared
with the code under test."""

from __future__ import annotations

import numpy as np


def _f64(x):
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sequences(q, k, cu_q, cu_k):
    """(q rows, k rows, batch index) per sequence: fixed mode slices the batch axis."""
    if cu_q is None:
        for b in range(q.shape[0]):
            yield b, (b, slice(None)), (b, slice(None))
    else:
        cu_q = np.asarray(cu_q, dtype=np.int64)
        cu_k = np.asarray(cu_k, dtype=np.int64)
        for b in range(len(cu_q) - 1):
            yield b, (slice(cu_q[b], cu_q[b + 1]),), (slice(cu_k[b], cu_k[b + 1]),)


def _scores(qh, kh, *, b, h, scale, softcap, bias, alibi, causal, top_left, window):
    """Pre-softmax scores of one (sequence, head), with -inf where masked; also the
    softcapped-but-unbiased values needed by the softcap derivative."""
    lq, lk = qh.shape[0], kh.shape[0]
    s = scale * (qh @ kh.T)
    capped = softcap * np.tanh(s / softcap) if softcap > 0 else s
    x = capped.copy()
    if bias is not None:
        bb = 0 if bias.shape[0] == 1 else b
        bh = 0 if bias.shape[1] == 1 else h
        x = x + bias[bb, bh, :lq, :lk]
    diag = 0 if top_left else lk - lq
    i = np.arange(lq)[:, None]
    j = np.arange(lk)[None, :]
    if alibi is not None:
        slope = alibi[h] if alibi.ndim == 1 else alibi[b, h]
        x = x - slope * np.abs(i + diag - j)
    left, right = window
    if causal:
        right = 0
    vis = np.ones((lq, lk), dtype=bool)
    if left >= 0:
        vis &= j >= i + diag - left
    if right >= 0:
        vis &= j <= i + diag + right
    x = np.where(vis, x, -np.inf)
    return x, capped


def _softmax(x):
    m = x.max(axis=1, keepdims=True) if x.shape[1] else np.full((x.shape[0], 1), -np.inf)
    empty = ~np.isfinite(m)
    m = np.where(empty, 0.0, m)
    p = np.exp(x - m)
    l = p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.where(empty | (l == 0), -np.inf, m + np.log(l))[:, 0]
        P = np.where(l > 0, p / np.where(l > 0, l, 1.0), 0.0)
    return P, lse


def _setup(q, k, v, bias, alibi, scale):
    q, k, v, bias, alibi = (_f64(t) for t in (q, k, v, bias, alibi))
    if bias is not None and bias.ndim < 4:
        bias = bias[(None,) * (4 - bias.ndim)]
    hq, hk = q.shape[-2], k.shape[-2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return q, k, v, bias, alibi, scale, hq // hk


def attention(q, k, v, *, bias=None, alibi_slopes=None, scale=None, causal=False,
              alignment="bottom_right", window=(-1, -1), softcap=0.0, cu_seqlens_q=None,
              cu_seqlens_k=None):
    """Returns (out float64 like q, lse float64 (B,H,Sq) or (H,total_q))."""
    q, k, v, bias, alibi, scale, group = _setup(q, k, v, bias, alibi_slopes, scale)
    varlen = cu_seqlens_q is not None
    out = np.zeros(q.shape)
    hq = q.shape[-2]
    lse = np.zeros((hq, q.shape[0])) if varlen else np.zeros((q.shape[0], hq, q.shape[1]))
    for b, qi, ki in _sequences(q, k, cu_seqlens_q, cu_seqlens_k):
        for h in range(hq):
            x, _ = _scores(q[qi][:, h], k[ki][:, h // group], b=b, h=h, scale=scale, softcap=softcap,
                           bias=bias, alibi=alibi, causal=causal,
                           top_left=alignment == "top_left", window=window)
            P, l = _softmax(x)
            out[qi + (h,)] = P @ v[ki][:, h // group]
            if varlen:
                lse[h, qi[0]] = l
            else:
                lse[b, h] = l
    return out, lse


def attention_grads(q, k, v, dout, *, bias=None, alibi_slopes=None, scale=None, causal=False,
                    alignment="bottom_right", window=(-1, -1), softcap=0.0, cu_seqlens_q=None,
                    cu_seqlens_k=None):
    """Analytic float64 gradients (dq, dk, dv, dbias-or-None); dbias is reduced over
    the bias's broadcast dims (its shape as given, lower ranks too)."""
    bias_shape = None if bias is None else tuple(bias.shape)
    q, k, v, bias, alibi, scale, group = _setup(q, k, v, bias, alibi_slopes, scale)
    dout = _f64(dout)
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(v.shape)
    dbias = None if bias is None else np.zeros(bias.shape)
    for b, qi, ki in _sequences(q, k, cu_seqlens_q, cu_seqlens_k):
        for h in range(q.shape[-2]):
            kh = h // group
            qh, kk, vv, do = q[qi][:, h], k[ki][:, kh], v[ki][:, kh], dout[qi][:, h]
            x, capped = _scores(qh, kk, b=b, h=h, scale=scale, softcap=softcap, bias=bias,
                                alibi=alibi, causal=causal, top_left=alignment == "top_left",
                                window=window)
            P, _ = _softmax(x)
            dv[ki + (kh,)] += P.T @ do
            dP = do @ vv.T
            dS = P * (dP - (P * dP).sum(axis=1, keepdims=True))  # d loss / d x
            if dbias is not None:
                bb = 0 if bias.shape[0] == 1 else b
                bh = 0 if bias.shape[1] == 1 else h
                dbias[bb, bh, :dS.shape[0], :dS.shape[1]] += dS
            if softcap > 0:
                dS = dS * (1.0 - (capped / softcap) ** 2)
            dq[qi + (h,)] += scale * dS @ kk
            dk[ki + (kh,)] += scale * dS.T @ qh
    if dbias is not None:
        dbias = dbias.reshape(bias_shape)
    return dq, dk, dv, dbias


def max_err(a, ref):
    """Largest absolute difference, treating matching infinities (lse of empty rows) as equal."""
    a = _f64(a)
    ref = np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    same_inf = np.isinf(a) & np.isinf(ref) & (np.sign(a) == np.sign(ref))
    assert not np.isnan(a).any(), "NaN in result"
    with np.errstate(invalid="ignore"):
        d = np.where(same_inf, 0.0, np.abs(a - ref))
    return float(d.max()) if d.size else 0.0
