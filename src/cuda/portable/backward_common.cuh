// Kernels and host code behind backward_scratch.cuh; included by portable/backward.cu only,
// so that each kernel is compiled into one object.
#pragma once
#include <algorithm>

#include "cuda/portable/backward_scratch.cuh"
#include "cuda/workspace.hpp"

namespace flashattn::detail::cuda::bwd {

// One warp per (row, head): D = sum_c dO[c] * O[c] in fp32.
template <typename T>
__global__ void dsum_kernel(const BackwardParams p, float* __restrict__ dsum) {
  constexpr int kWarps = 8;
  const std::int64_t chunks = (p.seqlen_q + kWarps - 1) / kWarps;
  std::int64_t idx = blockIdx.x;
  const std::int64_t chunk = idx % chunks;
  idx /= chunks;
  const int h = int(idx % p.heads_q);
  const int b = int(idx / p.heads_q);
  const SequenceView s = sequence(p, b);
  const std::int64_t i = chunk * kWarps + threadIdx.x / 32;
  if (i >= s.len_q) return;
  const int lane = threadIdx.x % 32;
  const T* o = static_cast<const T*>(p.out) + operand_offset(p.out_strides, b, s.q_row0, i, h);
  const T* d = static_cast<const T*>(p.dout) + operand_offset(p.dout_strides, b, s.q_row0, i, h);
  float acc = 0.f;
  for (int c = lane; c < p.head_dim; c += 32) acc += to_float(o[c]) * to_float(d[c]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) dsum[scratch_row(p, b, s, i) * p.heads_q + h] = acc;
}

// dQ from its fp32 accumulator: one block per (batch, row), all heads.
template <typename T>
__global__ void convert_dq_kernel(const BackwardParams p, const float* __restrict__ acc) {
  const int b = int(blockIdx.x / p.seqlen_q);
  const std::int64_t i = blockIdx.x % p.seqlen_q;
  const SequenceView s = sequence(p, b);
  if (i >= s.len_q) return;
  const std::int64_t row = scratch_row(p, b, s, i);
  const int n = p.heads_q * p.head_dim;
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const int h = e / p.head_dim, c = e % p.head_dim;
    static_cast<T*>(p.dq)[operand_offset(p.dq_strides, b, s.q_row0, i, h) + c] =
        from_float<T>(acc[row * n + e]);
  }
}

// dbias from its fp32 accumulator, every element of its (broadcast) shape.
__global__ void convert_dbias_kernel(const BackwardParams p, const float* __restrict__ acc) {
  const std::int64_t per_slot = p.seqlen_q * p.seqlen_k;
  const std::int64_t n = per_slot * p.dbias_batch_size * p.dbias_heads_size;
  for (std::int64_t e = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; e < n;
       e += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t slot = e / per_slot, ij = e % per_slot;
    const std::int64_t i = ij / p.seqlen_k, j = ij % p.seqlen_k;
    const int bb = int(slot / p.dbias_heads_size), bh = int(slot % p.dbias_heads_size);
    const std::int64_t off = bb * p.dbias_batch + bh * p.dbias_head + i * p.dbias_row + j;
    switch (p.bias_dtype) {
      case DType::f16: static_cast<__half*>(p.dbias)[off] = __float2half_rn(acc[e]); break;
      case DType::bf16: static_cast<__nv_bfloat16*>(p.dbias)[off] = __float2bfloat16_rn(acc[e]); break;
      default: static_cast<float*>(p.dbias)[off] = acc[e]; break;
    }
  }
}

template <typename T>
Scratch prepare_t(const BackwardParams& p, bool with_dq_acc, bool with_dbias_acc) {
  const cudaStream_t st = stream_of(p);
  auto round = [](std::size_t n) { return (n + 63) & ~std::size_t(63); };  // 256-byte alignment
  const std::size_t rows = std::size_t(p.total_q) * p.heads_q;
  const std::size_t n_dsum = round(rows);
  const std::size_t n_dq = with_dq_acc ? round(rows * p.head_dim) : 0;
  const std::size_t n_db =
      with_dbias_acc ? round(std::size_t(p.dbias_batch_size) * p.dbias_heads_size * p.seqlen_q * p.seqlen_k) : 0;
  float* base = static_cast<float*>(workspace((n_dsum + n_dq + n_db) * sizeof(float), st));
  Scratch s;
  s.dsum = base;
  if (with_dq_acc) {
    s.dq_acc = base + n_dsum;
    FA_CUDA_CHECK(cudaMemsetAsync(s.dq_acc, 0, n_dq * sizeof(float), st));
  }
  if (with_dbias_acc) {
    s.dbias_acc = base + n_dsum + n_dq;
    FA_CUDA_CHECK(cudaMemsetAsync(s.dbias_acc, 0, n_db * sizeof(float), st));
  }
  const std::int64_t blocks = (p.seqlen_q + 7) / 8 * p.heads_q * std::int64_t(p.batch);
  if (blocks > 0) {
    dsum_kernel<T><<<unsigned(blocks), 256, 0, st>>>(p, s.dsum);
    FA_CUDA_CHECK_LAUNCH();
  }
  return s;
}

template <typename T>
void finish_t(const BackwardParams& p, const Scratch& s) {
  const cudaStream_t st = stream_of(p);
  if (s.dq_acc != nullptr && p.seqlen_q > 0) {
    convert_dq_kernel<T><<<unsigned(p.seqlen_q * p.batch), 256, 0, st>>>(p, s.dq_acc);
    FA_CUDA_CHECK_LAUNCH();
  }
  if (s.dbias_acc != nullptr) {
    const std::int64_t n = p.seqlen_q * p.seqlen_k * p.dbias_batch_size * p.dbias_heads_size;
    if (n > 0) {
      const std::int64_t blocks = std::min<std::int64_t>((n + 255) / 256, 65536);
      convert_dbias_kernel<<<unsigned(blocks), 256, 0, st>>>(p, s.dbias_acc);
      FA_CUDA_CHECK_LAUNCH();
    }
  }
}

}  // namespace flashattn::detail::cuda::bwd
