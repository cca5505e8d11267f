// Writes a consumer warpgroup's 64 rows of O (normalized, in the output dtype) and
// their logsumexp. Rows past the end of the sequence are dropped (their Q rows were
// padding or another sequence's tokens).
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/sm90/ptx.cuh"
#include "params.hpp"
#include "softmax.cuh"

namespace flashattn::detail::cuda::sm90 {

// o: the wgmma accumulator layout of a 64 x D tile; row0: first row of this
// warpgroup within the sequence.
template <typename T, int D>
__device__ __forceinline__ void store_output(const ForwardParams& p, int b, int h, const SequenceView& seq,
                                             std::int64_t row0, const float (&o)[D / 2], const float (&inv)[2],
                                             const float (&lse)[2]) {
  const int t = threadIdx.x % 128;
  const int lane = t % 32;
  T* out = static_cast<T*>(p.out);
  // Predicated stores, no branches: this may run while a wgmma is in flight (the
  // deferred epilogue, mainloop.cuh). Rows past the sequence end store nothing.
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const std::int64_t row = row0 + 16 * (t / 32) + lane / 4 + 8 * hh;
    const bool in_seq = row < seq.len_q;
    T* dst = out + operand_offset(p.out_strides, b, seq.q_row0, row, h) + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const std::uint32_t v = pack2<T>(o[4 * j + 2 * hh] * inv[hh], o[4 * j + 2 * hh + 1] * inv[hh]);
      st_global_if(dst + 8 * j, v, in_seq);
    }
    st_global_if(p.lse + lse_offset(p, b, seq.q_row0, row, h), __float_as_uint(lse[hh]), in_seq && lane % 4 == 0);
  }
}

// The same stores in two steps (deferred epilogue, Cfg::kPackedEpilogue): pack_output
// converts O (normalized) into output-type pairs in place, o[0 .. D/4) holding the
// bits in the order store_output walks them, before the next wgmma is issued (so
// no register read later is GMMA-defined); store_output_packed stores them under
// it. In place, so no registers beyond O's are needed: entry i is written after
// every entry >= i it reads (2j + hh <= 4j + 2hh, in increasing order).
template <typename T, int D>
__device__ __forceinline__ void pack_output(float (&o)[D / 2], const float (&inv)[2]) {
#pragma unroll
  for (int j = 0; j < D / 8; ++j)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      o[2 * j + hh] = __uint_as_float(pack2<T>(o[4 * j + 2 * hh] * inv[hh], o[4 * j + 2 * hh + 1] * inv[hh]));
}
template <typename T, int D>
__device__ __forceinline__ void store_output_packed(const ForwardParams& p, int b, int h, const SequenceView& seq,
                                                    std::int64_t row0, const float (&o)[D / 2],
                                                    const float (&lse)[2]) {
  const int t = threadIdx.x % 128;
  const int lane = t % 32;
  T* out = static_cast<T*>(p.out);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const std::int64_t row = row0 + 16 * (t / 32) + lane / 4 + 8 * hh;
    const bool in_seq = row < seq.len_q;
    T* dst = out + operand_offset(p.out_strides, b, seq.q_row0, row, h) + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) st_global_if(dst + 8 * j, __float_as_uint(o[2 * j + hh]), in_seq);
    st_global_if(p.lse + lse_offset(p, b, seq.q_row0, row, h), __float_as_uint(lse[hh]), in_seq && lane % 4 == 0);
  }
}

}  // namespace flashattn::detail::cuda::sm90
