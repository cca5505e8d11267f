// The portable backward's kernels:
//   dkdv_kernel   one block per (key block, kv head, batch); dK/dV in registers,
//                 summed over the q heads of a GQA group; dQ (and dbias) added to
//                 fp32 accumulators with atomics unless deterministic.
//   dq_kernel     deterministic dQ: one block per (query block, q head, batch),
//                 recomputes the tile scores and sums over key blocks in order.
//   dbias_kernel  deterministic dbias when it is reduced over broadcast dims: one
//                 block per (query block, key block, dbias slot), summing the
//                 (batch, head) pairs of the slot in order.
#pragma once
#include "cuda/portable/backward_tile.cuh"

namespace flashattn::detail::cuda::pbwd {

template <class C>
__device__ __forceinline__ Smem<C>& shared_tiles() {
  extern __shared__ float4 smem_raw[];
  return *reinterpret_cast<Smem<C>*>(smem_raw);
}

template <class C, typename T>
__global__ void __launch_bounds__(C::NT) dkdv_kernel(const BackwardParams p, const bwd::Scratch sc) {
  Smem<C>& sm = shared_tiles<C>();
  const std::int64_t nkb = (p.seqlen_k + C::BK - 1) / C::BK;
  std::int64_t idx = blockIdx.x;
  const std::int64_t kb = idx % nkb;
  idx /= nkb;
  const int hk = int(idx % p.heads_kv);
  const int b = int(idx / p.heads_kv);
  const SequenceView s = sequence(p, b);
  const std::int64_t j0 = kb * C::BK;
  if (j0 >= s.len_k) return;
  const std::int64_t j1 = j0 + C::BK < s.len_k ? j0 + C::BK : s.len_k;
  const Mask m = make_mask(p, s);
  // Only the query rows whose visible range meets [j0, j1).
  std::int64_t qlo = 0, qhi = s.len_q;
  if (m.right >= 0) qlo = j0 - m.diag - m.right > 0 ? j0 - m.diag - m.right : 0;
  if (m.left >= 0) qhi = j1 - m.diag + m.left < s.len_q ? j1 - m.diag + m.left : s.len_q;

  float dk[C::DPT], dv[C::DPT];
#pragma unroll
  for (int i = 0; i < C::DPT; ++i) dk[i] = dv[i] = 0.f;
  const int group = p.heads_q / p.heads_kv;
  bool loaded = false;
  for (int h = hk * group; h < (hk + 1) * group; ++h) {
    const HeadCtx t = head_ctx(p, b, h, s, sc.dbias_acc);
    if (!loaded) {
      load_key_tile<C, T>(sm, p, t, hk, j0);
      loaded = true;
    }
    for (std::int64_t i0 = qlo; i0 < qhi; i0 += C::BQ) {
      __syncthreads();  // the previous tile's readers are done
      load_query_tile<C, T>(sm, p, sc.dsum, t, i0);
      __syncthreads();
      float ds[C::RPT];
      tile_scores<C>(sm, p, t, i0, j0, ds);
      __syncthreads();
      accumulate_dkdv<C>(sm, dk, dv);
      if (sc.dq_acc != nullptr) {
        const int hd = p.head_dim;
        for (int e = threadIdx.x; e < C::BQ * hd; e += C::NT) {
          const int i = e / hd, c = e % hd;
          if (i0 + i >= s.len_q) continue;
          float acc = 0.f;
#pragma unroll
          for (int j = 0; j < C::BK; ++j) acc += sm.dx[i * C::BK + j] * sm.k[j * C::P + c];
          atomicAdd(sc.dq_acc + (bwd::scratch_row(p, b, s, i0 + i) * p.heads_q + h) * hd + c, acc);
        }
      }
    }
  }
  // Transpose through shared memory so the stores are row-contiguous.
  __syncthreads();
  {
    const int j = threadIdx.x % C::BK, g = threadIdx.x / C::BK;
#pragma unroll
    for (int i = 0; i < C::DPT; ++i) {
      sm.k[j * C::P + g + C::G * i] = dk[i];
      sm.v[j * C::P + g + C::G * i] = dv[i];
    }
  }
  __syncthreads();
  const int hd = p.head_dim;
  for (int e = threadIdx.x; e < C::BK * hd; e += C::NT) {
    const int j = e / hd, c = e % hd;
    if (j0 + j >= s.len_k) continue;
    static_cast<T*>(p.dk)[operand_offset(p.dk_strides, b, s.k_row0, j0 + j, hk) + c] =
        from_float<T>(sm.k[j * C::P + c]);
    static_cast<T*>(p.dv)[operand_offset(p.dv_strides, b, s.k_row0, j0 + j, hk) + c] =
        from_float<T>(sm.v[j * C::P + c]);
  }
}

template <class C, typename T>
__global__ void __launch_bounds__(C::NT) dq_kernel(const BackwardParams p, const float* __restrict__ dsum) {
  Smem<C>& sm = shared_tiles<C>();
  const std::int64_t nqb = (p.seqlen_q + C::BQ - 1) / C::BQ;
  std::int64_t idx = blockIdx.x;
  const std::int64_t qb = idx % nqb;
  idx /= nqb;
  const int h = int(idx % p.heads_q);
  const int b = int(idx / p.heads_q);
  const SequenceView s = sequence(p, b);
  const std::int64_t i0 = qb * C::BQ;
  if (i0 >= s.len_q) return;
  const std::int64_t ilast = (i0 + C::BQ < s.len_q ? i0 + C::BQ : s.len_q) - 1;
  const HeadCtx t = head_ctx(p, b, h, s, nullptr);
  const int hk = kv_head(p, h);
  // key_begin/key_end are non-decreasing in i: the block's keys are [begin(i0), end(ilast)).
  const std::int64_t jlo = t.m.key_begin(i0), jhi = t.m.key_end(ilast);
  load_query_tile<C, T>(sm, p, dsum, t, i0);
  float acc[C::EPT];
#pragma unroll
  for (int e = 0; e < C::EPT; ++e) acc[e] = 0.f;
  for (std::int64_t j0 = jlo; j0 < jhi; j0 += C::BK) {
    __syncthreads();
    load_key_tile<C, T>(sm, p, t, hk, j0);
    __syncthreads();
    float ds[C::RPT];
    tile_scores<C>(sm, p, t, i0, j0, ds);
    __syncthreads();
#pragma unroll
    for (int e = 0; e < C::EPT; ++e) {
      const int x = threadIdx.x + C::NT * e, i = x / C::D, c = x % C::D;
      float a = 0.f;
#pragma unroll
      for (int j = 0; j < C::BK; ++j) a += sm.dx[i * C::BK + j] * sm.k[j * C::P + c];
      acc[e] += a;
    }
  }
#pragma unroll
  for (int e = 0; e < C::EPT; ++e) {
    const int x = threadIdx.x + C::NT * e, i = x / C::D, c = x % C::D;
    if (c < p.head_dim && i0 + i < s.len_q)
      static_cast<T*>(p.dq)[operand_offset(p.dq_strides, b, s.q_row0, i0 + i, h) + c] = from_float<T>(acc[e]);
  }
}

template <class C, typename T>
__global__ void __launch_bounds__(C::NT) dbias_kernel(const BackwardParams p, const float* __restrict__ dsum) {
  Smem<C>& sm = shared_tiles<C>();
  const std::int64_t nqb = (p.seqlen_q + C::BQ - 1) / C::BQ, nkb = (p.seqlen_k + C::BK - 1) / C::BK;
  std::int64_t idx = blockIdx.x;
  const std::int64_t qb = idx % nqb;
  idx /= nqb;
  const std::int64_t kb = idx % nkb;
  const std::int64_t slot = idx / nkb;
  const int bb = int(slot / p.dbias_heads_size), bh = int(slot % p.dbias_heads_size);
  const int b_lo = p.dbias_batch_size == 1 ? 0 : bb, b_hi = p.dbias_batch_size == 1 ? p.batch : bb + 1;
  const int h_lo = p.dbias_heads_size == 1 ? 0 : bh, h_hi = p.dbias_heads_size == 1 ? p.heads_q : bh + 1;
  const std::int64_t i0 = qb * C::BQ, j0 = kb * C::BK;
  float acc[C::RPT];
#pragma unroll
  for (int r = 0; r < C::RPT; ++r) acc[r] = 0.f;
  for (int b = b_lo; b < b_hi; ++b) {
    const SequenceView s = sequence(p, b);
    if (i0 >= s.len_q || j0 >= s.len_k) continue;
    const Mask m = make_mask(p, s);
    const std::int64_t ilast = (i0 + C::BQ < s.len_q ? i0 + C::BQ : s.len_q) - 1;
    if (m.key_end(ilast) <= j0 || m.key_begin(i0) >= j0 + C::BK) continue;  // tile fully masked
    for (int h = h_lo; h < h_hi; ++h) {
      const HeadCtx t = head_ctx(p, b, h, s, nullptr);
      __syncthreads();
      load_query_tile<C, T>(sm, p, dsum, t, i0);
      load_key_tile<C, T>(sm, p, t, kv_head(p, h), j0);
      __syncthreads();
      float ds[C::RPT];
      tile_scores<C>(sm, p, t, i0, j0, ds);
#pragma unroll
      for (int r = 0; r < C::RPT; ++r) acc[r] += ds[r];
    }
  }
  const int j = threadIdx.x % C::BK, r0 = threadIdx.x / C::BK;
  if (j0 + j >= p.seqlen_k) return;
#pragma unroll
  for (int r = 0; r < C::RPT; ++r) {
    const std::int64_t gi = i0 + r0 + C::G * r;
    if (gi >= p.seqlen_q) continue;
    const std::int64_t off = bb * p.dbias_batch + bh * p.dbias_head + gi * p.dbias_row + j0 + j;
    switch (p.bias_dtype) {
      case DType::f16: static_cast<__half*>(p.dbias)[off] = __float2half_rn(acc[r]); break;
      case DType::bf16: static_cast<__nv_bfloat16*>(p.dbias)[off] = __float2bfloat16_rn(acc[r]); break;
      default: static_cast<float*>(p.dbias)[off] = acc[r]; break;
    }
  }
}

}  // namespace flashattn::detail::cuda::pbwd
