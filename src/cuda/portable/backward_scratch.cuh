// The scratch of the FlashAttention-2 backward shared by the portable and sm80
// kernels: its layout, index helpers, and the host functions (defined once, in
// portable/backward.cu) that prepare it (zeroed accumulators, D = rowsum(dO * O))
// and convert the fp32 accumulators into the gradients' dtype and strides.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::bwd {

// fp32 scratch of one backward call, carved from the per-stream workspace.
struct Scratch {
  float* dsum = nullptr;       // [total_q][heads_q]: rowsum(dO * O)
  float* dq_acc = nullptr;     // [total_q][heads_q][head_dim]; null when dQ is written directly
  float* dbias_acc = nullptr;  // [slots][seqlen_q][seqlen_k]; null when dbias is written directly
};

// Row index into the [total_q] scratch arrays.
__device__ __forceinline__ std::int64_t scratch_row(const ForwardParams& p, int b, const SequenceView& s,
                                                    std::int64_t i) {
  return p.cu_seqlens_q != nullptr ? s.q_row0 + i : std::int64_t(b) * p.seqlen_q + i;
}

// The (batch, head) slot of the dbias accumulator a (b, h) pair adds into.
__device__ __forceinline__ std::int64_t dbias_slot(const BackwardParams& p, int b, int h) {
  const int bb = p.dbias_batch_size == 1 ? 0 : b;
  const int bh = p.dbias_heads_size == 1 ? 0 : h;
  return std::int64_t(bb) * p.dbias_heads_size + bh;
}

// Whether every dbias element receives exactly one contribution (no broadcast).
inline bool dbias_unreduced(const BackwardParams& p) {
  return p.dbias_batch_size == p.batch && p.dbias_heads_size == p.heads_q;
}

// Carves the scratch from the stream's workspace, zeroes the accumulators and
// launches the row-sum kernel. with_dq_acc / with_dbias_acc: whether the main
// kernels accumulate dQ / dbias through fp32 atomics.
Scratch prepare(const BackwardParams& p, bool with_dq_acc, bool with_dbias_acc);
// The portable deterministic passes, for any kernel family whose main kernel left
// them out: dQ written directly (one block per query block, key blocks summed in
// order) and/or dbias reduced over its broadcast dims in a fixed order.
void deterministic_passes(const BackwardParams& p, const Scratch& s, bool dq, bool dbias);
// Writes dQ (when accumulated) and dbias (when accumulated) from the scratch.
void finish(const BackwardParams& p, const Scratch& s);

}  // namespace flashattn::detail::cuda::bwd
