// Tile sizes of the Hopper forward kernel, per head dim, with the reason for each.
#pragma once

namespace flashattn::detail::cuda::sm90 {

template <int D>
struct TileConfig {
  static_assert(D == 64 || D == 128 || D == 256, "head dims with a tuned tile");
  static constexpr int kHeadDim = D;
  // Two consumer warpgroups, each owning 64 query rows (wgmma's fixed M): the pair
  // shares every K/V tile loaded, halving K/V traffic per query row.
  static constexpr int kConsumerWarpgroups = 2;
  static constexpr int kBlockM = 64 * kConsumerWarpgroups;
  // Keys per step. S = Q.K^T is 64 x kBlockN fp32 per warpgroup (kBlockN/2 registers
  // a thread) beside O (D/2 registers): 128 keys keep both under the consumer budget
  // for D <= 128; D = 256 needs 128 registers for O alone, so 64 keys.
  static constexpr int kBlockN = D <= 128 ? 128 : 64;
  // Ring depth: as many K+V stages as fit beside Q in 227 KB. D = 64: 4 x 32 KB;
  // D = 128: 3 x 64 KB (+32 KB Q); D = 256: 2 x 64 KB (+64 KB Q). Two stages at
  // D = 128 starved the GEMMs (measured, docs/perf/cuda_sm90.md).
  static constexpr int kStages = D == 64 ? 4 : D == 128 ? 3 : 2;
  // Issue the next S before this block's softmax (FlashAttention-3's intra-warpgroup
  // overlap): needs S, P and O live at once; at D = 256 that is 176 accumulator
  // registers of the 240 and ptxas spills, so D = 256 runs the GEMMs back to back.
  static constexpr bool kOverlap = D <= 128;
  static constexpr int kChunks = D / 64;  // 128-byte swizzle: one TMA box per 64 columns
  static constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
  // setmaxnreg budgets (multiples of 8; 128*24 + 256*240 <= 65536): the producer
  // warpgroup only issues copies, the consumers hold S, P and O in registers.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  static constexpr int kQBytes = kBlockM * D * 2;
  static constexpr int kKVBytes = kBlockN * D * 2;  // one K or one V stage
  static constexpr int kQChunkBytes = kBlockM * 128;
  static constexpr int kKVChunkBytes = kBlockN * 128;
  static constexpr int kBarrierBytes = 8 * (2 + 4 * kStages);
  // 1024 bytes of slack to align the ring to the swizzle atom.
  static constexpr int kSmemBytes = 1024 + kQBytes + 2 * kStages * kKVBytes + kBarrierBytes;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block on sm_90");
};

}  // namespace flashattn::detail::cuda::sm90
