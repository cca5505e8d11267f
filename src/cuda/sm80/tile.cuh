// Tile shapes, the swizzled shared-memory layout and the cp.async tile loads
// of the sm80 forward kernel.
#pragma once
#include <cuda_pipeline.h>

#include <cstddef>
#include <cstdint>

#include "cuda/common.cuh"

namespace flashattn::detail::cuda::sm80 {

// Per head dim: 8 warps of 16 query rows each (kBM = 128 rows share every K/V
// tile, halving L2->SMEM traffic against 64-row blocks). Head dims up to 128
// keep the Q fragments in registers; beyond that the O accumulators alone take
// D/2 registers per thread, so Q is re-read from shared memory each tile and
// the key tile shrinks to 32 to hold the score registers down.
template <int kD>
struct Traits {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBM = kWarps * 16;
  static constexpr int kBN = kD <= 128 ? 64 : 32;
  static constexpr bool kQInRegs = kD <= 128;
  // Shared-memory row stride: rows are whole 128-byte lines so that the XOR
  // swizzle below works on 8-chunk groups (96 is stored as 128).
  static constexpr int kRS = (kD + 63) / 64 * 64;
  static constexpr int kChunks = kD / 8;  // 16-byte chunks per row that hold data
  static constexpr int kStages = 2;
  static constexpr std::size_t kSmemElems = std::size_t(kBM + 2 * kStages * kBN) * kRS;
  static constexpr std::size_t kSmemBytes = kSmemElems * 2;
  static_assert(kD % 16 == 0, "head dim buckets are multiples of 16");
};

// Element offset of 16-byte chunk `chunk` of row `row`: the chunk index is
// XORed with the row within each group of eight chunks (128 bytes), so the 8
// rows an ldmatrix reads (or a warp's cp.async writes) hit 8 distinct 16-byte
// bank groups.
template <int kRS>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * kRS + (((chunk & ~7) | ((chunk ^ row) & 7)) << 3);
}

// Copies a kRows x kD tile (rows `row_stride` elements apart) into shared
// memory with cp.async. Rows at or past rows_valid and columns at or past
// head_dim are zero-filled (no global read), so padded head dims and ragged
// tails contribute exact zeros.
template <typename T, int kRows, int kD, int kThreads>
__device__ __forceinline__ void load_tile(T* smem, const T* gbase, std::int64_t row_stride, int rows_valid,
                                          int head_dim, int tid) {
  constexpr int kCh = kD / 8;
  constexpr int kRS = Traits<kD>::kRS;
#pragma unroll
  for (int idx = tid; idx < kRows * kCh; idx += kThreads) {
    const int r = idx / kCh, c = idx % kCh;
    const bool ok = r < rows_valid && c * 8 < head_dim;
    const T* src = ok ? gbase + r * row_stride + c * 8 : gbase;
    __pipeline_memcpy_async(smem + swizzle<kRS>(r, c), src, 16, ok ? 0 : 16);
  }
}

}  // namespace flashattn::detail::cuda::sm80
