// Tile shapes, the swizzled shared-memory layout and the cp.async tile loads
// of the sm80 forward kernel.
#pragma once
#include <cuda_pipeline.h>

#include <cstddef>
#include <cstdint>

#include "cuda/common.cuh"

namespace flashattn::detail::cuda::sm80 {

// One kernel configuration: head-dim bucket kD, key tile kBN, cp.async stages,
// Q fragments in registers or re-read from shared memory per key tile, and
// kShaped (softcap/bias/ALiBi code present). A warp owns kMT m16 row tiles:
// with two (32 rows) every K/V fragment read from shared memory feeds twice
// the mma work (v1, 16 rows per warp, was ~0.6x FlashAttention-2). Head dims
// above 128 keep one row tile per warp and 8 warps: their O accumulators alone
// take D/2 registers per row tile. The per-head-dim choice is DefaultConfig
// (forward.cu); docs/perf/cuda_forward.md has the measurements behind it.
//
// kStages >= 2: K and V of a tile travel together through kStages buffers, one
// barrier per tile. kStages == 1: one K and one V buffer loaded in turn (V(i)
// during S(i), K(i+1) during softmax and P V(i)), two barriers per tile, the
// least shared memory (so that two blocks fit an SM at head dim 256).
template <int kD_, int kBN_, int kStages_, bool kQRegs_, bool kShaped_, int kWarps_ = (kD_ <= 128 ? 4 : 8),
          int kMT_ = (kD_ <= 128 ? 2 : 1)>
struct Config {
  static constexpr int kD = kD_;
  static constexpr int kBN = kBN_;
  static constexpr int kStages = kStages_;
  static constexpr bool kSplitKV = kStages_ == 1;
  static constexpr bool kShaped = kShaped_;
  static constexpr int kMT = kMT_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBM = kWarps * 16 * kMT;  // rows that share every K/V tile
  static constexpr bool kQInRegs = kQRegs_;
  static constexpr int kMinBlocks = kThreads <= 128 ? 2 : 1;  // blocks per SM the registers allow
  // Shared-memory row stride: rows are whole 128-byte lines so that the XOR
  // swizzle below works on 8-chunk groups (96 is stored as 128).
  static constexpr int kRS = (kD + 63) / 64 * 64;
  static constexpr std::size_t kSmemElems = std::size_t(kBM + 2 * kStages * kBN) * kRS;  // Q + K/V stages
  static constexpr std::size_t kSmemBytes = kSmemElems * 2;
  static_assert(kD % 16 == 0 && kBN % 16 == 0 && kStages >= 1, "head dim buckets and key tiles are multiples of 16");
};

// Element offset of 16-byte chunk `chunk` of row `row`: the chunk index is
// XORed with the row within each group of eight chunks (128 bytes), so the 8
// rows an ldmatrix reads (or a warp's cp.async writes) hit 8 distinct 16-byte
// bank groups.
template <int kRS>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  return row * kRS + (((chunk & ~7) | ((chunk ^ row) & 7)) << 3);
}

// Byte offsets of one lane's ldmatrix row in a swizzled tile. The lane reads
// row `row0 + lane_row` (lane_row < 8, row0 a multiple of 8) at logical chunk
// 2*pair + odd. Rows are whole 128-byte lines, so moving by a multiple of 8
// rows or by 4 pairs (one line) adds a constant, and pair p within a line is
// the pair-0 offset with bits 5-6 XORed by p (the swizzle XORs chunk bits
// only): one register per operand instead of four (v3 held four; v4 needs
// the registers for larger key tiles).
template <int kRS>
struct LaneOffsets {
  std::uint32_t off0;
  __device__ __forceinline__ LaneOffsets(int lane_row, int odd, int row0)
      : off0(std::uint32_t((row0 + lane_row) * kRS * 2 + ((odd ^ lane_row) & 7) * 16)) {}
  // Offset for rows moved by `rows` (a multiple of 8) and chunk pair `pair`.
  __device__ __forceinline__ std::uint32_t at(int rows, int pair) const {
    return (off0 ^ std::uint32_t((pair & 3) * 32)) + std::uint32_t(rows * kRS * 2 + (pair >> 2) * 128);
  }
};

// Copies a kRows x kD tile (rows `row_stride` elements apart) into shared
// memory with cp.async. Rows at or past rows_valid and columns at or past
// head_dim are zero-filled (no global read), so padded head dims and ragged
// tails contribute exact zeros. kFewRows opts in to the path for fewer than 8
// rows per step (the forward's 4-warp head-dim-256 tiles); other callers keep
// the generic path there, and with it their measured code. kWhole: every row
// valid and head_dim == kD == kRS (load_tile_full below).
template <typename T, int kRows, int kD, int kThreads, bool kFewRows = false, bool kWhole = false>
__device__ __forceinline__ void load_tile(T* smem, const T* gbase, std::int64_t row_stride, int rows_valid,
                                          int head_dim, int tid) {
  constexpr int kRS = (kD + 63) / 64 * 64;
  static_assert(!kWhole || kRS == kD, "whole 128-byte lines only");
  // Chunks per row as loaded: 96 loads 16 (the last 4 zero-filled into the
  // row's padding) so that a thread keeps one column for all its rows.
  constexpr int kCh = kRS == 128 && kD == 96 ? 16 : kD / 8;
  if constexpr (kThreads % kCh == 0 && (kThreads / kCh) % 8 == 0 && kRows % (kThreads / kCh) == 0) {
    // A thread copies column c of rows r, r + kStep, ...: one 64-bit step and
    // one shared-memory step (the swizzle repeats every 8 rows).
    constexpr int kStep = kThreads / kCh;
    const int r0 = tid / kCh, c = tid % kCh;
    const bool col_ok = c * 8 < head_dim;
    const T* src = gbase + r0 * row_stride + c * 8;
    T* dst = smem + swizzle<kRS>(r0, c);
#pragma unroll
    for (int it = 0; it < kRows / kStep; ++it) {
      const bool ok = kWhole || (col_ok && r0 + it * kStep < rows_valid);
      __pipeline_memcpy_async(dst + it * kStep * kRS, ok ? src : gbase, 16, ok ? 0 : 16);
      src += kStep * row_stride;
    }
  } else if constexpr (kFewRows && kThreads % kCh == 0 && 8 % (kThreads / kCh) == 0 && kRows % 8 == 0) {
    // Fewer than 8 rows per step (head dims > 128 with 4 warps): the swizzle
    // repeats every 8 / kStep steps, so a thread keeps that many shared-memory
    // offsets (v4: the generic path below spilled its 64-bit addresses).
    constexpr int kStep = kThreads / kCh;
    constexpr int kPer = 8 / kStep;
    const int r0 = tid / kCh, c = tid % kCh;
    const bool col_ok = c * 8 < head_dim;
    const T* src = gbase + r0 * row_stride + c * 8;
    int dst[kPer];
#pragma unroll
    for (int u = 0; u < kPer; ++u) dst[u] = swizzle<kRS>(r0 + u * kStep, c);
#pragma unroll
    for (int it = 0; it < kRows / kStep; ++it) {
      const bool ok = kWhole || (col_ok && r0 + it * kStep < rows_valid);
      __pipeline_memcpy_async(smem + dst[it % kPer] + (it / kPer) * 8 * kRS, ok ? src : gbase, 16, ok ? 0 : 16);
      src += kStep * row_stride;
    }
  } else {
#pragma unroll
    for (int it = 0; it < (kRows * kCh + kThreads - 1) / kThreads; ++it) {
      const int idx = tid + it * kThreads;
      if ((kRows * kCh) % kThreads != 0 && idx >= kRows * kCh) break;
      const int r = idx / kCh, c = idx % kCh;
      const bool ok = r < rows_valid && c * 8 < head_dim;
      __pipeline_memcpy_async(smem + swizzle<kRS>(r, c), ok ? gbase + r * row_stride + c * 8 : gbase, 16,
                              ok ? 0 : 16);
    }
  }
}

// load_tile for a whole tile (every row valid, head_dim == kD == kRS): no
// per-row predicates or zero-fill selects (v5: they were ~2 of the ~5
// instructions per cp.async, in every key tile and prologue).
template <typename T, int kRows, int kD, int kThreads, bool kFewRows = false>
__device__ __forceinline__ void load_tile_full(T* smem, const T* gbase, std::int64_t row_stride, int tid) {
  load_tile<T, kRows, kD, kThreads, kFewRows, true>(smem, gbase, row_stride, kRows, kD, tid);
}

}  // namespace flashattn::detail::cuda::sm80
