"""PyTorch integration: torch.library custom ops with fake (meta) kernels and autograd.

flashattn::fwd and flashattn::bwd are opaque to torch.compile (no graph break: the
fake kernels give output shapes and strides), and register_autograd wires the
backward through our own kernel using the saved logsumexp. This module is imported
only when torch is importable; the native module never links against torch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _core


def _lse_empty(q: Tensor, varlen: bool) -> Tensor:
    return q.new_empty(_core._lse_shape(q, varlen), dtype=torch.float32)


@torch.library.custom_op("flashattn::fwd", mutates_args=())
def fwd(
    q: Tensor, k: Tensor, v: Tensor,
    bias: Optional[Tensor], alibi_slopes: Optional[Tensor],
    cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
    max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: Optional[float], causal: bool, alignment: str,
    window_left: int, window_right: int, softcap: float,
    deterministic: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    # deterministic is unused here; it rides along so that setup_context can see it.
    varlen = cu_seqlens_q is not None
    out = torch.empty_like(q)
    lse = _lse_empty(q, varlen)
    _core.forward(
        q, k, v, out=out, lse=lse, bias=bias, alibi_slopes=alibi_slopes,
        cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, alignment=alignment,
        window=(window_left, window_right), softcap=softcap, backend=backend)
    return out, lse


@fwd.register_fake
def _fwd_fake(q, k, v, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
              softmax_scale, causal, alignment, window_left, window_right, softcap, deterministic,
              backend):
    return torch.empty_like(q), _lse_empty(q, cu_seqlens_q is not None)


@torch.library.custom_op("flashattn::bwd", mutates_args=())
def bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    bias: Optional[Tensor], alibi_slopes: Optional[Tensor],
    cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
    max_seqlen_q: int, max_seqlen_k: int,
    softmax_scale: Optional[float], causal: bool, alignment: str,
    window_left: int, window_right: int, softcap: float,
    deterministic: bool, bias_grad: bool, backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    # dbias comes back empty (numel 0) when not requested: ops return plain tensors.
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbias = torch.empty_like(bias) if (bias_grad and bias is not None) else q.new_empty((0,))
    _core.backward(
        q, k, v, out, dout, lse, dq=dq, dk=dk, dv=dv,
        bias=bias, dbias=dbias if (bias_grad and bias is not None) else None,
        alibi_slopes=alibi_slopes, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, alignment=alignment,
        window=(window_left, window_right), softcap=softcap,
        deterministic=deterministic, backend=backend)
    return dq, dk, dv, dbias


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
              max_seqlen_k, softmax_scale, causal, alignment, window_left, window_right, softcap,
              deterministic, bias_grad, backend):
    dbias = torch.empty_like(bias) if (bias_grad and bias is not None) else q.new_empty((0,))
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dbias


_NONTENSOR = ("max_seqlen_q", "max_seqlen_k", "softmax_scale", "causal", "alignment",
              "window_left", "window_right", "softcap", "deterministic", "backend")


def _setup_context(ctx, inputs, output):
    (q, k, v, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, *rest) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k)
    ctx.options = dict(zip(_NONTENSOR, rest))


def _backward(ctx, dout, dlse):
    # The gradient of lse, if any, is dropped, as flash_attn does.
    q, k, v, out, lse, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    o = ctx.options
    need = ctx.needs_input_grad
    bias_grad = bias is not None and bool(need[3])
    # Autograd may hand over a broadcast or transposed gradient; only the last
    # stride must be 1 for the kernel.
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    dq, dk, dv, dbias = bwd(
        dout, q, k, v, out, lse, bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k,
        o["max_seqlen_q"], o["max_seqlen_k"], o["softmax_scale"], o["causal"], o["alignment"],
        o["window_left"], o["window_right"], o["softcap"], o["deterministic"], bias_grad,
        o["backend"])
    return (dq, dk, dv, dbias if bias_grad else None, None, None, None) + (None,) * len(_NONTENSOR)


torch.library.register_autograd("flashattn::fwd", _backward, setup_context=_setup_context)


def attention(q: Tensor, k: Tensor, v: Tensor, *, bias=None, alibi_slopes=None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=0, max_seqlen_k=0,
              softmax_scale=None, causal=False, alignment="bottom_right", window=(-1, -1),
              softcap=0.0, deterministic=False, backend=None) -> Tuple[Tensor, Tensor]:
    """Differentiable attention on torch tensors; returns (out, lse)."""
    left, right = _core.normalize_window(window)
    if alignment not in _core._ALIGNMENTS:
        raise ValueError(f"alignment: must be one of {_core._ALIGNMENTS}, got {alignment!r}")
    return fwd(
        q, k, v, _core.lift_bias(bias), alibi_slopes, cu_seqlens_q, cu_seqlens_k,
        int(max_seqlen_q or 0), int(max_seqlen_k or 0),
        None if softmax_scale is None else float(softmax_scale),
        bool(causal), alignment, left, right, float(softcap or 0.0), bool(deterministic),
        backend or "automatic")
