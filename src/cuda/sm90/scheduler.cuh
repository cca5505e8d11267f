// Persistent tile scheduler over (query block, batch, head): each CTA takes tiles
// blockIdx.x, blockIdx.x + gridDim.x, ... Tiles are ordered longest first (query
// blocks from the last: under a causal mask they see the most keys), so the static
// round-robin approximates longest-processing-time-first. Producer and consumers
// walk the same sequence, so they agree without communicating.
#pragma once
#include "mask.hpp"
#include "params.hpp"

namespace flashattn::detail::cuda::sm90 {

struct TileCoord {
  int m_block, batch, head;
};

struct Scheduler {
  int num_m_blocks, batch, heads;
  __host__ __device__ int num_tiles() const { return num_m_blocks * batch * heads; }
  __device__ __forceinline__ TileCoord tile(int t) const {
    const int per_m = batch * heads;
    const int mr = t / per_m;
    const int rest = t - mr * per_m;
    // Heads of one batch are adjacent: q heads sharing a kv head (GQA) run together
    // and reuse K/V from L2.
    return {num_m_blocks - 1 - mr, rest / heads, rest % heads};
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
