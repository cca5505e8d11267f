// The portable (SIMT) backward's building blocks: tile shapes, the shared-memory
// layout, tile loads, and the per-tile math every backward kernel shares
// (recompute P from lse, dP = dO V^T, dS = P (dP - D), the softcap factor).
#pragma once
#include <cstdint>

#include "cuda/portable/backward_scratch.cuh"

namespace flashattn::detail::cuda::pbwd {

constexpr float kLog2e = 1.4426950408889634f;

// D: head dim padded up; BK keys and BQ queries per tile; NT threads.
template <int D_, int BK_, int BQ_, int NT_>
struct Cfg {
  static constexpr int D = D_, BK = BK_, BQ = BQ_, NT = NT_;
  static constexpr int P = D + 1;      // smem row pitch: walking a column hits 32 banks
  static constexpr int G = NT / BK;    // threads sharing one key column
  static constexpr int RPT = BQ / G;   // query rows per thread in the score phase
  static constexpr int DPT = D / G;    // dK/dV entries per thread (registers)
  static constexpr int EPT = BQ * D / NT;  // dQ entries per thread (deterministic pass)
  static_assert(NT % BK == 0 && BQ % G == 0 && D % G == 0 && (BQ * D) % NT == 0, "tile shape");
};

template <class C>
struct Smem {
  float q[C::BQ * C::P], dout[C::BQ * C::P], k[C::BK * C::P], v[C::BK * C::P];
  float p[C::BQ * C::BK];   // P
  float dx[C::BQ * C::BK];  // dS * softcap' * scale: the gradient w.r.t. q.k
  float lse[C::BQ];         // in log2 units; -inf for rows that see nothing
  float dsum[C::BQ];
};

// Rows [first, first + nrows) of one head of an operand, as fp32, zero beyond
// the sequence and the head dim.
template <class C, typename T>
__device__ __forceinline__ void load_rows(float* dst, int nrows, const void* src, const OperandStrides& st,
                                          int b, std::int64_t row0, std::int64_t first, std::int64_t len,
                                          int h, int hd) {
  const T* base = static_cast<const T*>(src);
  for (int e = threadIdx.x; e < nrows * C::D; e += C::NT) {
    const int r = e / C::D, c = e % C::D;
    const std::int64_t row = first + r;
    float x = 0.f;
    if (row < len && c < hd) x = to_float(base[operand_offset(st, b, row0, row, h) + c]);
    dst[r * C::P + c] = x;
  }
}

// What the score math needs to know about one (batch, q head).
struct HeadCtx {
  Mask m;
  SequenceView s;
  float slope = 0.f;
  int b = 0, h = 0;
  float* dbias_acc = nullptr;  // this head's dbias slot when dS goes there by atomics
};

__device__ __forceinline__ HeadCtx head_ctx(const BackwardParams& p, int b, int h, const SequenceView& s,
                                            float* dbias_acc) {
  HeadCtx t;
  t.m = make_mask(p, s);
  t.s = s;
  t.slope = alibi_slope(p, b, h);
  t.b = b;
  t.h = h;
  t.dbias_acc = dbias_acc == nullptr ? nullptr : dbias_acc + bwd::dbias_slot(p, b, h) * p.seqlen_q * p.seqlen_k;
  return t;
}

// Q, dO, lse and D of query rows [i0, i0 + BQ) of head t.h.
template <class C, typename T>
__device__ __forceinline__ void load_query_tile(Smem<C>& sm, const BackwardParams& p, const float* dsum,
                                                const HeadCtx& t, std::int64_t i0) {
  load_rows<C, T>(sm.q, C::BQ, p.q, p.q_strides, t.b, t.s.q_row0, i0, t.s.len_q, t.h, p.head_dim);
  load_rows<C, T>(sm.dout, C::BQ, p.dout, p.dout_strides, t.b, t.s.q_row0, i0, t.s.len_q, t.h, p.head_dim);
  for (int r = threadIdx.x; r < C::BQ; r += C::NT) {
    const std::int64_t i = i0 + r;
    float l = -INFINITY, d = 0.f;
    if (i < t.s.len_q) {
      l = p.lse[lse_offset(p, t.b, t.s.q_row0, i, t.h)];
      d = dsum[bwd::scratch_row(p, t.b, t.s, i) * p.heads_q + t.h];
    }
    sm.lse[r] = l * kLog2e;
    sm.dsum[r] = d;
  }
}

// K and V of key rows [j0, j0 + BK) of kv head hk.
template <class C, typename T>
__device__ __forceinline__ void load_key_tile(Smem<C>& sm, const BackwardParams& p, const HeadCtx& t, int hk,
                                              std::int64_t j0) {
  load_rows<C, T>(sm.k, C::BK, p.k, p.k_strides, t.b, t.s.k_row0, j0, t.s.len_k, hk, p.head_dim);
  load_rows<C, T>(sm.v, C::BK, p.v, p.v_strides, t.b, t.s.k_row0, j0, t.s.len_k, hk, p.head_dim);
}

// Scores of the (BQ x BK) tile at (i0, j0): fills sm.p and sm.dx, returns this
// thread's dS (before the softcap factor; what dbias receives) in ds, and adds
// dS into t.dbias_acc when set. Thread layout: key j = tid % BK, rows
// tid / BK + G*r.
template <class C>
__device__ __forceinline__ void tile_scores(Smem<C>& sm, const BackwardParams& p, const HeadCtx& t,
                                            std::int64_t i0, std::int64_t j0, float (&ds)[C::RPT]) {
  const int j = threadIdx.x % C::BK, r0 = threadIdx.x / C::BK;
  float s[C::RPT], dp[C::RPT];
#pragma unroll
  for (int r = 0; r < C::RPT; ++r) s[r] = dp[r] = 0.f;
  const float* kr = sm.k + j * C::P;
  const float* vr = sm.v + j * C::P;
  const int hd = p.head_dim;
#pragma unroll 4
  for (int c = 0; c < hd; ++c) {
    const float kc = kr[c], vc = vr[c];
#pragma unroll
    for (int r = 0; r < C::RPT; ++r) {
      s[r] += sm.q[(r0 + C::G * r) * C::P + c] * kc;
      dp[r] += sm.dout[(r0 + C::G * r) * C::P + c] * vc;
    }
  }
  const std::int64_t gj = j0 + j;
#pragma unroll
  for (int r = 0; r < C::RPT; ++r) {
    const int i = r0 + C::G * r;
    const std::int64_t gi = i0 + i;
    const float lse2 = sm.lse[i];
    float pij = 0.f, dsij = 0.f, dxij = 0.f;
    if (gi < t.s.len_q && gj < t.s.len_k && lse2 != -INFINITY && t.m.visible(gi, gj)) {
      const float x = s[r] * p.scale;
      float val = x, deriv = 1.f;
      if (p.softcap > 0.f) {
        const float th = tanhf(x / p.softcap);
        val = p.softcap * th;
        deriv = 1.f - th * th;  // d(capped)/dx, as softcap_derivative() in mask.hpp
      }
      if (p.bias != nullptr) val += load_bias(p, bias_offset(p, t.b, t.h, gi, gj));
      if (p.alibi != nullptr) val -= t.slope * float(t.m.distance(gi, gj));
      pij = exp2f(val * kLog2e - lse2);
      dsij = pij * (dp[r] - sm.dsum[i]);
      if (t.dbias_acc != nullptr) atomicAdd(t.dbias_acc + gi * p.seqlen_k + gj, dsij);
      dxij = dsij * deriv * p.scale;
    }
    sm.p[i * C::BK + j] = pij;
    sm.dx[i * C::BK + j] = dxij;
    ds[r] = dsij;
  }
}

// dV += P^T dO and dK += dX^T Q for this thread's key j = tid % BK and head-dim
// entries g + G*m (g = tid / BK).
template <class C>
__device__ __forceinline__ void accumulate_dkdv(const Smem<C>& sm, float (&dk)[C::DPT], float (&dv)[C::DPT]) {
  const int j = threadIdx.x % C::BK, g = threadIdx.x / C::BK;
#pragma unroll 2
  for (int i = 0; i < C::BQ; ++i) {
    const float pij = sm.p[i * C::BK + j], dxij = sm.dx[i * C::BK + j];
    const float* dor = sm.dout + i * C::P + g;
    const float* qr = sm.q + i * C::P + g;
#pragma unroll
    for (int m = 0; m < C::DPT; ++m) {
      dv[m] += pij * dor[C::G * m];
      dk[m] += dxij * qr[C::G * m];
    }
  }
}

}  // namespace flashattn::detail::cuda::pbwd
