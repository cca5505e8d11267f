// Persistent tile scheduler over (query block, batch, head). CTA `cta` of `grid`
// walks its slots k = 0, 1, ... (tile_at); producer and consumers call the same
// function with the same arguments, so they agree without communicating. Orders:
//   lpt:        round robin over tiles ordered query block from the last (under a
//               causal mask the longest first), heads of one batch adjacent. The
//               order of v1..v5; kept for A/B runs.
//   lpt_snake:  the same order, but every other round is dealt right to left, so
//               the CTA that got the longest tile of one round gets the shortest of
//               the next (round-robin LPT left CTA 0 ~6% more causal work than the
//               mean at 4k-16k; the snake brings the spread under 1%).
//   head_major: the query blocks of one (batch, head) adjacent. With the heads
//               adjacent instead, 132 concurrent CTAs work on up to 132 different
//               heads and every K/V block comes from HBM once per CTA (128 FLOP per
//               byte: bandwidth-bound near 500 TFLOP/s, where D = 64/128 sat at
//               S <= 4k); head-major shares each K/V block among the CTAs of a head.
//   paired:     slots in pairs (query block M-1-i, then i) of one head, head-major:
//               under a causal mask with BM a multiple of BN each pair does the
//               same number of key blocks, so a plain round robin balances and the
//               heads stay adjacent for L2 reuse. With an odd M the middle blocks
//               (half a pair's work) come last, one per head, as the LPT tail.
#pragma once
#include <cstdint>

#include "mask.hpp"
#include "params.hpp"

namespace flashattn::detail::cuda::sm90 {

enum Order : int { kOrderLpt = 0, kOrderLptSnake = 1, kOrderHeadMajor = 2, kOrderPaired = 3 };

struct TileCoord {
  int m_block, batch, head;  // m_block < 0: an empty slot (skip it)
};

struct Scheduler {
  int num_m_blocks, batch, heads;
  int order;
  __host__ __device__ int num_tiles() const { return num_m_blocks * batch * heads; }
  __host__ __device__ int pairs_per_head() const { return num_m_blocks / 2; }
  // Work items dealt round robin: tiles, or pairs of tiles then the odd middles.
  __host__ __device__ int num_units() const {
    return order == kOrderPaired ? (pairs_per_head() + (num_m_blocks & 1)) * batch * heads : num_tiles();
  }
  // The k-th slot of CTA `cta` in a grid of `grid`; false once the CTA is done.
  __device__ __forceinline__ bool tile_at(int k, int cta, int grid, TileCoord& c) const {
    const int bh_count = batch * heads;
    if (order == kOrderPaired) {
      const std::int64_t u64 = cta + std::int64_t(k >> 1) * grid;
      if (u64 >= num_units()) return false;
      // 32-bit from here (num_units < 2^31): a 64-bit division is a subroutine call.
      const int u = int(u64);
      const int per = pairs_per_head();
      const int paired = per * bh_count;
      if (u < paired) {
        const int bh = u / per, i = u - bh * per;
        c = {(k & 1) ? i : num_m_blocks - 1 - i, bh / heads, bh % heads};
      } else {
        // A middle block alone: its second slot is empty.
        const int bh = u - paired;
        c = {(k & 1) ? -1 : per, bh / heads, bh % heads};
      }
      return true;
    }
    // Snake: odd rounds take index grid - 1 - cta = (cta ^ -1) + grid, written so
    // that no extra loop-invariant value stays live (the producer has 24 registers).
    const int flip = -int(order == kOrderLptSnake && (k & 1));
    const int in_round = (cta ^ flip) + (flip & grid);
    const std::int64_t t = std::int64_t(k) * grid + in_round;
    // In the last (partial) round a snake CTA may find no tile: no later round either.
    if (t >= num_tiles()) return false;
    const int ti = int(t);
    if (order == kOrderHeadMajor) {
      const int bh = ti / num_m_blocks;
      c = {num_m_blocks - 1 - (ti - bh * num_m_blocks), bh / heads, bh % heads};
    } else {
      const int mr = ti / bh_count;
      const int rest = ti - mr * bh_count;
      c = {num_m_blocks - 1 - mr, rest / heads, rest % heads};
    }
    return true;
  }
};

// What one tile needs to know about its sequence: where it lives and which key
// blocks [n_lo, n_hi) hold any visible key for its rows.
// Row counts fit in 32 bits (sm90_unsupported refuses more), so the values the
// mainloop keeps live are ints: fewer registers beside the accumulators.
template <int BM, int BN>
struct BlockInfo {
  SequenceView seq;
  Mask mask;
  int m0 = 0;
  int n_lo = 0, n_hi = 0;
  bool valid = false;  // false: past the end of a varlen sequence, nothing to do
  // Keys every row of the tile sees: blocks inside need no per-element mask.
  int full_lo = 0, full_hi = 0;

  __device__ __forceinline__ BlockInfo(const ForwardParams& p, const TileCoord& c) {
    seq = sequence(p, c.batch);
    m0 = c.m_block * BM;
    valid = m0 < seq.len_q;
    if (!valid) return;
    mask = make_mask(p, seq);
    const std::int64_t last = (m0 + BM < seq.len_q ? m0 + BM : seq.len_q) - 1;
    const std::int64_t kb = mask.key_begin(m0), ke = mask.key_end(last);
    n_lo = int(kb / BN);
    n_hi = ke > kb ? int((ke + BN - 1) / BN) : n_lo;
    // Clamped to [0, len_k]: only the comparison with block bounds matters.
    const std::int64_t flo = mask.key_begin(last);
    full_lo = int(flo < seq.len_k ? flo : seq.len_k);
    full_hi = int(mask.key_end(m0));
  }
  // Whether key block n needs the per-element mask for some row of the tile.
  __device__ __forceinline__ bool needs_mask(int n) const {
    const int j0 = n * BN;
    return j0 < full_lo || j0 + BN > full_hi;
  }
};

}  // namespace flashattn::detail::cuda::sm90
