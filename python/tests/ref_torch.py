"""The same naive attention in torch, in any dtype: float64 for the oracle that torch
autograd differentiates, or the inputs' low precision for the "same-precision math"
baseline of the tolerance rule (matmuls in the dtype, softmax in float32 rounded
back to the dtype, as PyTorch's math SDPA does)."""

from __future__ import annotations

import torch


def attention(q, k, v, *, bias=None, alibi_slopes=None, scale=None, causal=False,
              alignment="bottom_right", window=(-1, -1), softcap=0.0, dtype=None):
    """q (B, Sq, H, D), k/v (B, Sk, Hk, D) -> out (B, Sq, H, D) in `dtype` (default q's)."""
    dtype = dtype or q.dtype
    q, k, v = (t.to(dtype) for t in (q, k, v))
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(h // hk, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(h // hk, dim=1)
    s = (qh @ kh.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias.to(dtype)
    diag = 0 if alignment == "top_left" else sk - sq
    i = torch.arange(sq, device=q.device)[:, None]
    j = torch.arange(sk, device=q.device)[None, :]
    if alibi_slopes is not None:
        slopes = alibi_slopes if alibi_slopes.dim() == 2 else alibi_slopes[None].expand(b, h)
        dist = (i + diag - j).abs().to(dtype)
        s = s - slopes.to(dtype)[:, :, None, None] * dist
    left, right = window
    if causal:
        right = 0
    visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        visible &= j >= i + diag - left
    if right >= 0:
        visible &= j <= i + diag + right
    s = s.masked_fill(~visible, float("-inf"))
    low = dtype in (torch.float16, torch.bfloat16)
    p = torch.softmax(s.float() if low else s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0).to(dtype)  # rows with no visible key give 0
    return (p @ vh).transpose(1, 2)


def assert_within_rule(ours, naive, exact, what, fp32_rtol):
    """flash_attn's rule, as tests/support/check.cpp states it: for fp16/bf16 the error of
    `ours` against the float64 `exact` is at most twice that of `naive` (the same math in
    the same dtype) plus two units of rounding at the reference's magnitude (both round
    their final result to the dtype, which alone costs up to half a unit each). fp32
    gets a relative bound `fp32_rtol` instead (both errors are ~1e-7)."""
    exact = exact.to(ours.device)
    e_ours = (ours.double() - exact.double()).abs().max().item()
    e_naive = (naive.double() - exact.double()).abs().max().item()
    scale = max(1.0, exact.abs().max().item())
    if ours.dtype == torch.float32:
        bound = fp32_rtol * scale
    else:
        bound = 2 * e_naive + 2 * torch.finfo(ours.dtype).eps * exact.abs().max().item() + 1e-5
    assert e_ours <= bound, f"{what}: error {e_ours:.3g} > bound {bound:.3g} (naive same-dtype {e_naive:.3g})"
