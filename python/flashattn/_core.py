"""Framework-neutral calls into the native module.

Outputs are allocated here, in the caller's framework on the caller's device
(numpy in -> numpy out, torch in -> torch out), then filled in place by C++.
Everything else (shapes, dtypes, devices, strides, option ranges) is validated
by the C++ library, whose errors arrive as ValueError / TypeError.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from . import _flashattn as _C

ForwardResult = namedtuple("ForwardResult", ["out", "lse", "backend"])
BackwardResult = namedtuple("BackwardResult", ["dq", "dk", "dv", "dbias", "backend"])

_ALIGNMENTS = ("bottom_right", "top_left")


try:  # torch is optional; numpy works without it
    import torch as _TORCH
except ImportError:
    _TORCH = None


def _torch():
    return _TORCH


def is_torch(x: Any) -> bool:
    return _TORCH is not None and isinstance(x, _TORCH.Tensor)


def _native(x: Any) -> Any:
    """What crosses into C++: numpy arrays as they are, torch tensors detached
    (DLPack refuses tensors that require grad; the data is the same)."""
    if x is None:
        return None
    if is_torch(x):
        return x.detach()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(
        f"flashattn: expected a numpy array or a torch tensor, got {type(x).__module__}.{type(x).__name__}"
    )


def _lse_shape(q: Any, varlen: bool) -> Tuple[int, ...]:
    if varlen:
        return (q.shape[1], q.shape[0])  # (heads, total_q)
    return (q.shape[0], q.shape[2], q.shape[1])  # (batch, heads, seqlen_q)


def _empty_like(x: Any) -> Any:
    if is_torch(x):
        return _torch().empty_like(x)
    return np.empty_like(x)  # order='K' keeps a transposed layout


def _empty_f32(shape: Sequence[int], like: Any) -> Any:
    if is_torch(like):
        return _torch().empty(tuple(shape), dtype=_torch().float32, device=like.device)
    return np.empty(tuple(shape), dtype=np.float32)


def lift_bias(bias: Any) -> Any:
    """A bias of rank < 4 is broadcast from the right, as (…, seqlen_q, seqlen_k)."""
    if bias is None or bias.ndim >= 4:
        return bias
    return bias[(None,) * (4 - bias.ndim)]


def normalize_window(window: Any) -> Tuple[int, int]:
    if window is None:
        return (-1, -1)
    left, right = window
    return int(left), int(right)


class _DeviceScope:
    """For CUDA tensors: makes the tensor's device current (torch refuses to
    export a tensor of another device through DLPack) and yields torch's current
    stream on it, so our kernels are ordered with the caller's work."""

    def __init__(self, x: Any):
        self.x = x
        self.guard = None
        self.stream = 0

    def __enter__(self) -> "_DeviceScope":
        if is_torch(self.x) and self.x.device.type == "cuda":
            torch = _torch()
            self.guard = torch.cuda.device(self.x.device)
            self.guard.__enter__()
            self.stream = int(torch.cuda.current_stream(self.x.device).cuda_stream)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.guard is not None:
            self.guard.__exit__(*exc)


def _common_kwargs(
    bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
    softmax_scale, causal, alignment, window, softcap, backend, num_threads,
) -> dict:
    if alignment not in _ALIGNMENTS:
        raise ValueError(f"alignment: must be one of {_ALIGNMENTS}, got {alignment!r}")
    left, right = normalize_window(window)
    return dict(
        bias=_native(lift_bias(bias)),
        alibi_slopes=_native(alibi_slopes),
        cu_seqlens_q=_native(cu_seqlens_q),
        cu_seqlens_k=_native(cu_seqlens_k),
        max_seqlen_q=int(max_seqlen_q or 0),
        max_seqlen_k=int(max_seqlen_k or 0),
        softmax_scale=None if softmax_scale is None else float(softmax_scale),
        causal=bool(causal),
        alignment=alignment,
        window_left=left,
        window_right=right,
        softcap=float(softcap or 0.0),
        backend=backend or "automatic",
        num_threads=int(num_threads),
    )


def forward(
    q: Any, k: Any, v: Any, *,
    out: Any = None, lse: Any = None,
    bias: Any = None, alibi_slopes: Any = None,
    cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
    max_seqlen_q: int = 0, max_seqlen_k: int = 0,
    softmax_scale: Optional[float] = None, causal: bool = False,
    alignment: str = "bottom_right", window: Tuple[int, int] = (-1, -1),
    softcap: float = 0.0, backend: Optional[str] = None, num_threads: int = 0,
) -> ForwardResult:
    """Attention forward without autograd: returns (out, lse, backend name).

    q (batch, seqlen_q, heads, dim), k/v (batch, seqlen_k, heads_k, dim), or in
    varlen mode (total, heads, dim) with int32 cu_seqlens_q/k (batch + 1) and the
    max lengths. lse is float32 (batch, heads, seqlen_q) or (heads, total_q).
    out/lse may be given to be filled in place.
    """
    _native(q)  # a clear TypeError for non-arrays before anything is allocated
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    if out is None:
        out = _empty_like(q)
    if lse is None:
        lse = _empty_f32(_lse_shape(q, varlen), q)
    kw = _common_kwargs(bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        softmax_scale, causal, alignment, window, softcap, backend, num_threads)
    with _DeviceScope(q) as scope:
        name = _C.forward(_native(q), _native(k), _native(v), _native(out), _native(lse),
                          stream=scope.stream, **kw)
    return ForwardResult(out, lse, name)


def backward(
    q: Any, k: Any, v: Any, out: Any, dout: Any, lse: Any, *,
    dq: Any = None, dk: Any = None, dv: Any = None,
    bias: Any = None, bias_grad: bool = False, dbias: Any = None,
    alibi_slopes: Any = None,
    cu_seqlens_q: Any = None, cu_seqlens_k: Any = None,
    max_seqlen_q: int = 0, max_seqlen_k: int = 0,
    softmax_scale: Optional[float] = None, causal: bool = False,
    alignment: str = "bottom_right", window: Tuple[int, int] = (-1, -1),
    softcap: float = 0.0, deterministic: bool = False,
    backend: Optional[str] = None, num_threads: int = 0,
) -> BackwardResult:
    """Attention backward without autograd: gradients of q, k, v (and of the bias
    when bias_grad or dbias is given, shaped like the bias) from the forward's
    out and lse. The options must be the forward's. Returns (dq, dk, dv, dbias, backend)."""
    _native(q)
    if dq is None:
        dq = _empty_like(q)
    if dk is None:
        dk = _empty_like(k)
    if dv is None:
        dv = _empty_like(v)
    want_dbias = bias is not None and (bias_grad or dbias is not None)
    if want_dbias and dbias is None:
        dbias = _empty_like(bias)
    kw = _common_kwargs(bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        softmax_scale, causal, alignment, window, softcap, backend, num_threads)
    with _DeviceScope(q) as scope:
        name = _C.backward(
            _native(q), _native(k), _native(v), _native(out), _native(dout), _native(lse),
            _native(dq), _native(dk), _native(dv),
            dbias=_native(lift_bias(dbias)) if want_dbias else None,
            deterministic=bool(deterministic), stream=scope.stream, **kw)
    return BackwardResult(dq, dk, dv, dbias if want_dbias else None, name)


def backend_available(name: str) -> bool:
    """Whether a backend ("cpu_flash", "cuda_sm80", ...) is compiled in and usable now."""
    return bool(_C.backend_available(name))


def backend_names() -> list:
    return list(_C.backend_names())
