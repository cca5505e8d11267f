// Target-independent pieces of the CPU FlashAttention-2 backend: tile sizes,
// per-thread buffers, the thread count, and how a tile meets the mask.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "half.hpp"
#include "mask.hpp"
#include "params.hpp"

namespace flashattn::detail::cpu {

// Query rows per tile and keys per tile. Br is a multiple of every target's
// micro-kernel row count (6 on AVX-512/AVX2/SSE4, 4 on EMU128); Bc a multiple
// of every target's micro-kernel width (64 floats on AVX-512, 16 on AVX2, 8 on
// SSE4/EMU128), so only short rows and columns take the tail kernels. With
// D=128 in fp32 the S tile is 48 KiB and a K^T strip of 64 keys 32 KiB: the strip
// stays in L1 while the Q rows stream from L2. docs/perf/cpu.md has the
// measurements behind the choice (other shapes were within noise).
// (Overridable at build time only for tuning experiments.)
#ifndef FLASHATTN_CPU_BLOCK_Q
#define FLASHATTN_CPU_BLOCK_Q 96
#endif
#ifndef FLASHATTN_CPU_BLOCK_K
#define FLASHATTN_CPU_BLOCK_K 128
#endif
inline constexpr std::int64_t kBlockQ = FLASHATTN_CPU_BLOCK_Q;
inline constexpr std::int64_t kBlockK = FLASHATTN_CPU_BLOCK_K;

inline int thread_count(int requested) {
  return requested > 0 ? requested : omp_get_max_threads();
}

// A 64-byte aligned float buffer owned by one thread (no zeroing on allocation).
class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(std::size_t n) { resize(n); }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  ~FloatBuffer() { std::free(data_); }
  void resize(std::size_t n) {
    if (n <= size_) return;
    std::free(data_);
    const std::size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    size_ = n;
  }
  float* data() const { return data_; }
  std::size_t size() const { return size_; }
  void release() {
    std::free(data_);
    data_ = nullptr;
    size_ = 0;
  }

 private:
  float* data_ = nullptr;
  std::size_t size_ = 0;
};

inline std::int64_t round_up(std::int64_t x, std::int64_t m) { return (x + m - 1) / m * m; }

// The keys [j0, j1) that query rows [i0, i1) can see at all: key_begin and
// key_end are non-decreasing in the row, so the first row bounds the start and
// the last row bounds the end. Empty (hi <= lo) when no row sees any key.
struct KeyRange {
  std::int64_t lo, hi;
};
inline KeyRange visible_keys(const Mask& m, std::int64_t i0, std::int64_t i1) {
  return {m.key_begin(i0), m.key_end(i1 - 1)};
}

// Whether every row of [i0, i1) sees every key of [j0, j1): then the tile needs
// no masking at all.
inline bool tile_fully_visible(const Mask& m, std::int64_t i0, std::int64_t i1, std::int64_t j0,
                               std::int64_t j1) {
  return m.key_begin(i1 - 1) <= j0 && m.key_end(i0) >= j1;
}

// True when no row of [i0, i1) can see a key of [j0, j1) (monotone bounds make
// the first and last rows decisive); such tiles are skipped.
inline bool tile_fully_masked(const Mask& m, std::int64_t i0, std::int64_t i1, std::int64_t j0,
                              std::int64_t j1) {
  return m.key_end(i1 - 1) <= j0 || m.key_begin(i0) >= j1;
}

// Writes n floats to an operand row of dtype t (rounding to nearest even).
inline void store_row(void* base, DType t, std::int64_t off, const float* src, std::int64_t n) {
  switch (t) {
    case DType::f32: std::copy(src, src + n, static_cast<float*>(base) + off); break;
    case DType::bf16: {
      auto* dst = static_cast<std::uint16_t*>(base) + off;
      for (std::int64_t c = 0; c < n; ++c) dst[c] = float_to_bf16(src[c]);
      break;
    }
    default: {
      auto* dst = static_cast<std::uint16_t*>(base) + off;
      for (std::int64_t c = 0; c < n; ++c) dst[c] = float_to_fp16(src[c]);
    }
  }
}

}  // namespace flashattn::detail::cpu

namespace flashattn::detail::cpu {

// K/V converted to fp32 tiles once per call instead of once per query block.
// Pairs (b, kv head) are numbered b * heads_kv + hk and processed in chunks whose
// packed tiles fit a memory budget (at least one pair per chunk), so huge inputs
// do not double their footprint. Key blocks start at multiples of kBlockK.
struct PackChunk {
  std::int64_t pair_begin = 0, pair_end = 0;
  std::vector<std::int64_t> block_base;  // per pair of the chunk: its first block; plus the total
  std::int64_t blocks() const { return block_base.back(); }
  std::int64_t base(std::int64_t pair) const { return block_base[std::size_t(pair - pair_begin)]; }
};

inline std::int64_t key_blocks(const ForwardParams& p, int b) {
  return (sequence(p, b).len_k + kBlockK - 1) / kBlockK;
}

// Splits all (b, kv head) pairs into chunks of at most `budget_blocks` key
// blocks each (but at least one pair).
inline std::vector<PackChunk> plan_chunks(const ForwardParams& p, std::int64_t budget_blocks) {
  std::vector<PackChunk> chunks;
  const std::int64_t pairs = std::int64_t(p.batch) * p.heads_kv;
  PackChunk cur;
  cur.block_base.push_back(0);
  for (std::int64_t pr = 0; pr < pairs; ++pr) {
    const std::int64_t nb = key_blocks(p, int(pr / p.heads_kv));
    if (cur.pair_end > cur.pair_begin && cur.blocks() + nb > budget_blocks) {
      chunks.push_back(cur);
      cur = PackChunk{};
      cur.pair_begin = cur.pair_end = pr;
      cur.block_base.push_back(0);
    }
    cur.block_base.push_back(cur.blocks() + nb);
    cur.pair_end = pr + 1;
  }
  if (cur.pair_end > cur.pair_begin) chunks.push_back(cur);
  return chunks;
}

// Packed tiles are held up to this many bytes per chunk.
inline constexpr std::int64_t kPackBudgetBytes = std::int64_t(256) << 20;
// Packing buffers up to this size are kept (per calling thread) for the next
// call: fresh pages cost a page fault each, about 4% of a 2k-token forward.
inline constexpr std::size_t kKeepPackFloats = std::size_t(64) << 20 >> 2;

}  // namespace flashattn::detail::cpu
