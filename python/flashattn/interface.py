"""The flash_attn 2.x API (same names, argument names, defaults, shapes and
returns) plus flashattn.attention, on numpy arrays and torch tensors.

torch tensors go through the differentiable custom op (autograd, torch.compile);
numpy arrays through a plain forward call (no autograd in numpy: use
flashattn.backward for gradients).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from . import _core

try:  # the torch layer exists only where torch does
    from . import _torch_ops
except ImportError:  # torch absent (or too old for torch.library.custom_op)
    _torch_ops = None

__all__ = [
    "attention",
    "flash_attn_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
]


def _check_dropout(dropout_p: float) -> None:
    if dropout_p:
        raise NotImplementedError(
            f"flashattn: dropout_p={dropout_p} is not supported yet (attention dropout is not "
            "implemented); pass dropout_p=0.0")


def _run(q, k, v, *, bias, alibi_slopes, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0,
         max_seqlen_k=0, softmax_scale, causal, alignment, window, softcap, deterministic,
         backend) -> Tuple[Any, Any]:
    if _core.is_torch(q):
        if _torch_ops is not None:
            return _torch_ops.attention(
                q, k, v, bias=bias, alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
                cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                softmax_scale=softmax_scale, causal=causal, alignment=alignment, window=window,
                softcap=softcap, deterministic=deterministic, backend=backend)
        if any(t is not None and t.requires_grad for t in (q, k, v, bias)):
            raise RuntimeError("flashattn: autograd needs torch >= 2.4 (torch.library.custom_op)")
    r = _core.forward(
        q, k, v, bias=bias, alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, alignment=alignment, window=window,
        softcap=softcap, backend=backend)
    return r.out, r.lse


def attention(q, k, v, *, bias=None, causal: bool = False, alignment: str = "bottom_right",
              window: Tuple[int, int] = (-1, -1), softcap: float = 0.0, alibi_slopes=None,
              scale: Optional[float] = None, return_lse: bool = False, backend: Optional[str] = None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q: Optional[int] = None,
              max_seqlen_k: Optional[int] = None, deterministic: bool = False):
    """Exact attention: softmax(scale·q·kᵀ [softcapped] + bias − ALiBi, masked)·v.

    Layout (batch, seqlen, heads, headdim) for q, k, v (k/v may have fewer heads:
    GQA/MQA); any strides with a unit last stride, so a (batch, heads, seqlen, dim)
    tensor is passed as ``x.transpose(1, 2)`` without a copy. Varlen: (total, heads,
    dim) with int32 cu_seqlens_q/k and max_seqlen_q/k.

    bias: additive, broadcastable as (batch|1, heads|1, seqlen_q, seqlen_k) (lower
    ranks broadcast from the right); gets a gradient under torch autograd.
    causal/window: key j is visible to query i when diag(i) − left ≤ j ≤ diag(i) + right
    (−1 = unbounded; causal means right = 0), where diag(i) = i + seqlen_k − seqlen_q
    for alignment='bottom_right' (flash_attn) or i for 'top_left' (SDPA's is_causal).
    alibi_slopes: float32 (heads) or (batch, heads). scale defaults to 1/√headdim.
    backend: None (fastest available), or a name from flashattn.backend_names().

    Returns out (like q), or (out, lse) with return_lse, lse float32
    (batch, heads, seqlen_q) or (heads, total_q) in varlen mode.
    """
    out, lse = _run(q, k, v, bias=bias, alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
                    cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q or 0,
                    max_seqlen_k=max_seqlen_k or 0, softmax_scale=scale, causal=causal,
                    alignment=alignment, window=window, softcap=softcap,
                    deterministic=deterministic, backend=backend)
    return (out, lse) if return_lse else out


def _flash_return(out, lse, return_attn_probs: bool):
    # flash_attn returns (out, softmax_lse, S_dmask); we never materialize the
    # probabilities, so the third item is None.
    return (out, lse, None) if return_attn_probs else out


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                    *, bias=None):
    """flash_attn.flash_attn_func: q (batch, seqlen_q, nheads, headdim), k/v
    (batch, seqlen_k, nheads_k, headdim). Returns out, or (out, softmax_lse
    (batch, nheads, seqlen_q), None) with return_attn_probs. ``bias`` is ours."""
    _check_dropout(dropout_p)
    out, lse = _run(q, k, v, bias=bias, alibi_slopes=alibi_slopes, softmax_scale=softmax_scale,
                    causal=causal, alignment="bottom_right", window=window_size, softcap=softcap,
                    deterministic=deterministic, backend=None)
    return _flash_return(out, lse, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False,
                              window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                              deterministic=False, return_attn_probs=False, *, bias=None):
    """qkv (batch, seqlen, 3, nheads, headdim); q, k, v are strided views of it."""
    return flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale,
                           causal, window_size, softcap, alibi_slopes, deterministic,
                           return_attn_probs, bias=bias)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False,
                             window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             deterministic=False, return_attn_probs=False, *, bias=None):
    """q (batch, seqlen_q, nheads, headdim), kv (batch, seqlen_k, 2, nheads_k, headdim)."""
    return flash_attn_func(q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal,
                           window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
                           bias=bias)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None, *, bias=None):
    """q (total_q, nheads, headdim), k/v (total_k, nheads_k, headdim), cu_seqlens_q/k
    int32 (batch + 1). Returns out, or (out, softmax_lse (nheads, total_q), None).
    ``bias`` is (batch|1, nheads|1, max_seqlen_q, max_seqlen_k) indexed by in-sequence
    positions. block_table (paged KV) is not supported."""
    _check_dropout(dropout_p)
    if block_table is not None:
        raise NotImplementedError("flashattn: block_table (paged KV cache) is not supported yet")
    out, lse = _run(q, k, v, bias=bias, alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q,
                    cu_seqlens_k=cu_seqlens_k, max_seqlen_q=int(max_seqlen_q),
                    max_seqlen_k=int(max_seqlen_k), softmax_scale=softmax_scale, causal=causal,
                    alignment="bottom_right", window=window_size, softcap=softcap,
                    deterministic=deterministic, backend=None)
    return _flash_return(out, lse, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0,
                                     softmax_scale=None, causal=False, window_size=(-1, -1),
                                     softcap=0.0, alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, *, bias=None):
    """qkv (total, 3, nheads, headdim), cu_seqlens int32 (batch + 1)."""
    return flash_attn_varlen_func(qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens,
                                  max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                                  window_size, softcap, alibi_slopes, deterministic,
                                  return_attn_probs, bias=bias)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False, *, bias=None):
    """q (total_q, nheads, headdim), kv (total_k, 2, nheads_k, headdim)."""
    return flash_attn_varlen_func(q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                  max_seqlen_k, dropout_p, softmax_scale, causal, window_size,
                                  softcap, alibi_slopes, deterministic, return_attn_probs,
                                  bias=bias)
