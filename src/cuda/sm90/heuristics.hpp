// Tile sizes of the Hopper forward kernel, per head dim, with the reason for each.
#pragma once

namespace flashattn::detail::cuda::sm90 {

// kWarpgroups: consumer warpgroups, each owning 64 query rows (wgmma's fixed M).
// D = 128/256 use two; D = 64 uses three (BM = 192; forward.cu picks the config).
template <int D, int kWarpgroups = 2>
struct TileConfig {
  static_assert(D == 64 || D == 128 || D == 256, "head dims with a tuned tile");
  static_assert(kWarpgroups == 2 || (kWarpgroups == 3 && D == 64), "three consumer warpgroups only at D = 64");
  static constexpr int kHeadDim = D;
  // The consumer warpgroups share every K/V tile loaded: more of them, less K/V
  // traffic per query row, and (ping-pong) more GEMM time to hide each one's
  // exponentials under. D = 64 has the most exponentials per FLOP (the softmax
  // work per key block does not shrink with D), so it takes three.
  static constexpr int kConsumerWarpgroups = kWarpgroups;
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
  // Store a finished tile's O under the next tile's first S (mainloop.cuh): O
  // stays live beside S there, which at D = 256 (O alone is 128 registers)
  // spilled 200-500 bytes, so D = 256 stores right away.
  static constexpr bool kDeferEpilogue = D <= 128;
  // With it, O converted to the output type before the next tile's first S is
  // issued (mainloop.cuh): measured +2-5% at D = 64, S = 512 and even from 2k;
  // at D = 128 within noise (-1..+1%), so D = 128 keeps the float stores.
  static constexpr bool kPackedEpilogue = D == 64;
  // Lazy rescaling with a warp vote to skip O's rescale (softmax.cuh): pays where
  // the skipped multiplies are many (D/2 a thread per key block). Measured (runs F1,
  // F2): D = 256 +3-5%, D = 128 about even, D = 64 (32 multiplies) 2-4% slower than
  // always rescaling, so D = 64 always rescales.
  static constexpr bool kLazyRescale = D >= 128;
  static constexpr int kChunks = D / 64;  // 128-byte swizzle: one TMA box per 64 columns
  static constexpr int kThreads = 128 * (1 + kConsumerWarpgroups);
  // setmaxnreg budgets (multiples of 8; 128 * producer + 128 * warpgroups * consumer
  // <= 65536): the producer warpgroup only issues copies, the consumers hold S, P
  // and O in registers. Three warpgroups: 24 + 3 x 160 (S 64 + P 32 + O 32 at D = 64).
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = kConsumerWarpgroups == 2 ? 240 : 160;
  static_assert(128 * kProducerRegs + 128 * kConsumerWarpgroups * kConsumerRegs <= 65536, "register file");

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
