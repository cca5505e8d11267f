// Hopper backward kernel (sm_90a): one CTA per (128-key block (64 at D = 256), kv head, batch), three
// warpgroups. Warp 0 of warpgroup 0 is the producer: TMA brings K and V once, then
// per query tile (64 rows, all q heads of the GQA group in turn) Q and dO into a
// two-stage ring, and its lanes write the tile's lse (log2 units) and D = rowsum(dO*O)
// beside them. Consumer warpgroup w (1 and 2 -> w = 0, 1) owns keys 64w..64w+63 and
// keeps their dK, dV in fp32 registers for the whole block (no atomics for dK/dV).
// Per query tile, in wgmma terms (M = 64 keys of the warpgroup, N = 64 queries):
//   S^T = K_w Q^T, dP^T = V_w dO^T        ss, both operands K-major (as the forward's S)
//   P^T = exp2(S^T scale log2e - lse2), dS^T = P^T (dP^T - D) scale   (registers)
//   dV += P^T dO, dK += dS^T Q           rs: the accumulators are the A fragments,
//                                         dO/Q are MN-major B (as the forward's V)
//   dS^T -> shared memory, then
//   dQ (64 queries x 64 columns) = dS K   ss with both operands MN-major (how the
//                                         warpgroups share it: DqMode), staged in
//                                         shared memory and added to the fp32
//                                         accumulator by cp.reduce.async.bulk.tensor.
// D = 256 (DqMode::query_halves, bwd_consumer_qh below): 64 keys per CTA, both
// consumer warpgroups own the same 64 keys and warpgroup w columns 128w..128w+127 of
// dK, dV and dQ (dK + dV of all 256 columns would be 256 fp32 registers a thread).
#pragma once
#include <cuda.h>

#include <cstdint>
#include <type_traits>

#include "cuda/portable/backward_scratch.cuh"
#include "cuda/sm90/ptx.cuh"
#include "cuda/sm90/softmax.cuh"
#include "cuda/sm90/tma.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::sm90 {

// How the consumer warpgroups share dQ = dS K of a tile (64 queries x D):
//   split_cols (D = 128): each warpgroup 64 columns over all 128 keys (needs both
//     halves of dS^T: a barrier between the warpgroups every tile);
//   alternate (D = 64): warpgroup (tile & 1) the whole 64 x 64 over all 128 keys
//     (an N = 32 half is not a legal MN-major 128-byte-swizzle operand).
// Measured and dropped (docs/perf/cuda_backward.md v2, v4): at D = 64 each
// warpgroup reducing the partial over its own 64 keys, with no barrier between the
// warpgroups: 13-19% slower with REDs, 5-7% slower with the copy-engine reduce.
//   query_halves (D = 256): warpgroup w computes S^T, dP^T, P^T and dS^T of queries
//     32w..32w+31 only and both exchange P^T and dS^T through shared memory, then
//     accumulate their own 128 columns (no recomputed FLOPs; dV/dK read A from shared
//     memory). Measured and dropped (v1, docs/perf/cuda_backward.md): each warpgroup
//     computing S^T/dP^T over the whole tile itself (col_halves, 7/5 of the FLOPs).
enum class DqMode { split_cols, alternate, query_halves };

constexpr DqMode default_dq_mode(int D) {
  return D == 256 ? DqMode::query_halves : (D == 128 ? DqMode::split_cols : DqMode::alternate);
}

template <int D, DqMode Mode = default_dq_mode(D)>
struct BwdConfig {
  static_assert(D == 64 || D == 128 || D == 256, "backward head-dim buckets");
  static_assert((D == 128) == (Mode == DqMode::split_cols), "split_cols needs two 64-column halves");
  static_assert((D == 256) == (Mode == DqMode::query_halves), "the D = 256 layout");
  static constexpr DqMode kDqMode = Mode;
  static constexpr int kHeadDim = D;
  static constexpr bool kQueryHalves = Mode == DqMode::query_halves;
  // Columns of dK/dV a warpgroup accumulates (wgmma N of dV/dK) and its first one.
  static constexpr int kAccCols = kQueryHalves ? D / 2 : D;
  // keys per CTA: wgmma M = 64 per consumer warpgroup (D = 256: the same 64 for both)
  static constexpr int kBlockN = kQueryHalves ? 64 : 128;
  static constexpr int kBlockM = 64;   // queries per tile: wgmma N of S^T/dP^T, K of dV/dK
  static constexpr int kStages = 2;    // Q/dO/lse/D ring: the next tile lands during this one
  static constexpr int kChunks = D / 64;  // 128-byte swizzle: one TMA box per 64 columns
  static constexpr int kThreads = 384;
  // setmaxnreg budgets (128*24 + 256*240 <= 65536): the producer warp only issues
  // copies and a few loads; a consumer holds dK, dV (D/2 each), S^T, dP^T (32 each)
  // and the dQ tile (32) in registers.
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  // dS from the 16-bit P fragments instead of an fp32 copy (registers, see the consumer).
  static constexpr bool kPFromFragments = D >= 128;

  static constexpr int kKVBytes = kBlockN * D * 2;  // K or V
  static constexpr int kKVChunkBytes = kBlockN * 128;
  static constexpr int kQBytes = kBlockM * D * 2;   // one Q or dO stage
  static constexpr int kQChunkBytes = kBlockM * 128;
  static constexpr int kDSBytes = kBlockN * kBlockM * 2;  // dS^T, [key][query], one 64-column chunk
  // (D = 256: one buffer per warpgroup, each its own copy; else two, alternating tiles)
  // Layout (offsets from the 1024-aligned base; every operand tile starts on a
  // 1024-byte swizzle atom).
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKVBytes;
  static constexpr int kOffQ = kOffV + kKVBytes;
  static constexpr int kOffDO = kOffQ + kStages * kQBytes;
  static constexpr int kOffDS = kOffDO + kStages * kQBytes;  // two buffers
  static constexpr int kDQBytes = kQueryHalves ? 0 : kBlockM * 64 * 4;  // a warpgroup's fp32 dQ tile for the TMA reduce
  static constexpr int kOffP = kOffDS + 2 * kDSBytes;  // query_halves: P^T, two buffers
  static constexpr int kOffDQ = kOffP + (kQueryHalves ? 2 * kDSBytes : 0);  // one per consumer warpgroup
  static constexpr int kOffLse = kOffDQ + 2 * kDQBytes;
  static constexpr int kOffDsum = kOffLse + kStages * kBlockM * 4;
  static constexpr int kOffBar = kOffDsum + kStages * kBlockM * 4;
  static constexpr int kBarriers = 1 + 2 * kStages;  // kv_full, full[stages], empty[stages]
  static constexpr int kSmemBytes = 1024 + kOffBar + 8 * kBarriers;
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per block on sm_90");
};

struct BwdArgs {
  CUtensorMap tq, tk, tv, tdo;  // 64-byte aligned; read by the copy engine from param space
  BackwardParams p;
  const float* dsum;  // D = rowsum(dO * O), [total_q][heads_q]
  CUtensorMap tdq;    // dq_acc as (head_dim, heads_q, rows) fp32, boxes of 32 columns x 64 rows
  float* dq_acc;      // [total_q][heads_q][head_dim]; null: dQ left to the deterministic pass
  float scale_log2;   // scale * log2(e)
  float cap_pre;      // scale / softcap
  float softcap_log2;  // softcap * log2(e)
  int nkb;            // key blocks per (batch, kv head)
};

constexpr float kBwdLog2e = 1.4426950408889634f;

// What producer and consumers both derive from blockIdx: the key block and the
// query tiles that can see it.
struct BwdBlock {
  SequenceView s;
  Mask m;
  int b = 0, hk = 0, j0 = 0, keys = 0;
  int qfirst = 0, ntiles = 0, group = 1, total = 0;
  bool valid = false;  // false: the key block lies past this (varlen) sequence's keys

  __device__ __forceinline__ BwdBlock(const BackwardParams& p, int nkb, int block_n) {
    std::int64_t idx = blockIdx.x;
    const int kb = int(idx % nkb);
    idx /= nkb;
    hk = int(idx % p.heads_kv);
    b = int(idx / p.heads_kv);
    s = sequence(p, b);
    j0 = kb * block_n;
    valid = j0 < s.len_k;
    if (!valid) return;
    keys = s.len_k - j0 < block_n ? int(s.len_k - j0) : block_n;
    m = make_mask(p, s);
    // Query i sees key j iff j - diag - right <= i <= j - diag + left (mask.hpp solved for i).
    std::int64_t qlo = 0, qhi = s.len_q;
    if (m.right >= 0 && j0 - m.diag - m.right > qlo) qlo = j0 - m.diag - m.right;
    if (m.left >= 0 && j0 + keys - m.diag + m.left < qhi) qhi = j0 + keys - m.diag + m.left;
    ntiles = qhi > qlo ? int((qhi - qlo + 63) / 64) : 0;
    qfirst = int(qlo < s.len_q ? qlo : s.len_q);
    group = p.heads_q / p.heads_kv;
    total = ntiles * group;
  }
  // Query tile `it` of the flattened (q head, tile) walk.
  __device__ __forceinline__ void tile(int it, int& h, int& i0) const {
    const int g = it / ntiles;
    h = hk * group + g;
    i0 = qfirst + (it - g * ntiles) * 64;
  }
};

// Element e (0: low half) of a packed 16-bit pair, as float.
template <typename T>
__device__ __forceinline__ float unpack_half(std::uint32_t v, int e);
template <>
__device__ __forceinline__ float unpack_half<__nv_bfloat16>(std::uint32_t v, int e) {
  return __uint_as_float(e ? (v & 0xffff0000u) : (v << 16));
}
template <>
__device__ __forceinline__ float unpack_half<__half>(std::uint32_t v, int e) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(e ? v >> 16 : v & 0xffffu)));
}

template <class Cfg>
__device__ __forceinline__ void bwd_producer(const BwdArgs& a, const BwdBlock& blk, unsigned char* sm,
                                             std::uint64_t* bars) {
  const BackwardParams& p = a.p;
  const int lane = threadIdx.x % 32;
  if (blk.total == 0) return;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int tb = varlen ? 0 : blk.b;  // tensor-map batch coordinate
  std::uint64_t* kv_full = bars;
  std::uint64_t* full = bars + 1;
  std::uint64_t* empty = bars + 1 + Cfg::kStages;
  if (lane == 0) {
    mbar_expect_tx(kv_full, 2 * Cfg::kKVBytes);
    const int krow = int(blk.s.k_row0 + blk.j0);
#pragma unroll
    for (int ch = 0; ch < Cfg::kChunks; ++ch) {
      tma_load(sm + Cfg::kOffK + ch * Cfg::kKVChunkBytes, &a.tk, ch * 64, krow, blk.hk, tb, kv_full);
      tma_load(sm + Cfg::kOffV + ch * Cfg::kKVChunkBytes, &a.tv, ch * 64, krow, blk.hk, tb, kv_full);
    }
  }
  for (int it = 0; it < blk.total; ++it) {
    const int st = it % Cfg::kStages;
    if (it >= Cfg::kStages) mbar_wait(&empty[st], ((it / Cfg::kStages) - 1) & 1);
    int h, i0;
    blk.tile(it, h, i0);
    if (lane == 0) {
      // tx bytes first: the phase cannot complete before the 32 lanes arrive below.
      ::cuda::ptx::mbarrier_expect_tx(::cuda::ptx::sem_relaxed, ::cuda::ptx::scope_cta, ::cuda::ptx::space_shared,
                                      &full[st], std::uint32_t(2 * Cfg::kQBytes));
      const int qrow = int(blk.s.q_row0 + i0);
#pragma unroll
      for (int ch = 0; ch < Cfg::kChunks; ++ch) {
        tma_load(sm + Cfg::kOffQ + st * Cfg::kQBytes + ch * Cfg::kQChunkBytes, &a.tq, ch * 64, qrow, h, tb,
                 &full[st]);
        tma_load(sm + Cfg::kOffDO + st * Cfg::kQBytes + ch * Cfg::kQChunkBytes, &a.tdo, ch * 64, qrow, h, tb,
                 &full[st]);
      }
    }
    float* sl = reinterpret_cast<float*>(sm + Cfg::kOffLse) + st * 64;
    float* sd = reinterpret_cast<float*>(sm + Cfg::kOffDsum) + st * 64;
#pragma unroll
    for (int r = lane; r < 64; r += 32) {
      const std::int64_t i = std::int64_t(i0) + r;
      // Rows past the sequence and rows that see no key store lse = +inf: their
      // exponent S*scale - lse is -inf and P = 0 with no test in the consumers.
      float l2 = INFINITY, dd = 0.0f;
      if (i < blk.s.len_q) {
        const float l = p.lse[lse_offset(p, blk.b, blk.s.q_row0, i, h)];
        l2 = l == -INFINITY ? INFINITY : l * kBwdLog2e;
        dd = a.dsum[bwd::scratch_row(p, blk.b, blk.s, i) * p.heads_q + h];
      }
      sl[r] = l2;
      sd[r] = dd;
    }
    mbar_arrive(&full[st]);  // release: the lse/D stores above are visible to the waiters
  }
}

// Zeroes rows [r0, r1) of a tile of kChunks swizzled 64-column chunks (a row keeps its
// 128 bytes under the swizzle, so the unit order does not matter). Varlen only: rows
// past a sequence hold the next sequence's tokens or NaN padding, and wgmma would mix
// them into valid results (0 * NaN). All 256 consumer threads take part.
template <int kChunks>
__device__ __forceinline__ void zero_rows(unsigned char* tile, int chunk_bytes, int r0, int r1) {
  const int ct = threadIdx.x - 128;
  const int units = (r1 - r0) * kChunks * 8;
  for (int u = ct; u < units; u += 256) {
    const int row = r0 + u / (kChunks * 8), rest = u % (kChunks * 8);
    *reinterpret_cast<uint4*>(tile + (rest / 8) * chunk_bytes + row * 128 + (rest % 8) * 16) = make_uint4(0, 0, 0, 0);
  }
}

// Generic-proxy shared stores read next by wgmma (async proxy), then both consumer
// warpgroups meet.
__device__ __forceinline__ void consumers_publish_smem() {
  ::cuda::ptx::fence_proxy_async(::cuda::ptx::space_shared);
  named_barrier_sync(1, 256);
}

template <class Cfg, typename T, bool kSoftcap, bool kDq>
__device__ __forceinline__ void bwd_consumer(const BwdArgs& a, const BwdBlock& blk, unsigned char* sm,
                                             std::uint64_t* bars, int w) {
  constexpr int D = Cfg::kHeadDim;
  using GemmS = Wgmma<64, T>;  // S^T, dP^T, dQ: N = 64
  constexpr int NC = Cfg::kAccCols;
  static_assert(!Cfg::kQueryHalves, "D = 256 runs bwd_consumer_qh");
  using GemmKV = Wgmma<NC, T>;  // dK, dV: N = the warpgroup's columns
  const BackwardParams& p = a.p;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  std::uint64_t* kv_full = bars;
  std::uint64_t* full = bars + 1;
  std::uint64_t* empty = bars + 1 + Cfg::kStages;

  float dk[NC / 2], dv[NC / 2];
#pragma unroll
  for (int i = 0; i < NC / 2; ++i) dk[i] = dv[i] = 0.0f;

  // This thread's two keys (accumulator rows h = 0, 1) within the block, and the
  // queries that see each: [qa, qb) (mask.hpp solved for i; padded keys past the
  // sequence see none). Clamped to +-2^30 (sequences are shorter than 2^29,
  // sm90_backward_unsupported): only 32-bit values stay live through the tile loop,
  // beside 2 x D/2 accumulator registers.
  const int kr0 = 64 * w + 16 * warp + lane / 4;
  int qa[2], qb[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    constexpr std::int64_t kBig = std::int64_t(1) << 30;
    const std::int64_t j = blk.j0 + kr0 + 8 * hh;
    std::int64_t l = -kBig, u = kBig;
    if (blk.m.right >= 0) l = j - blk.m.diag - blk.m.right;
    if (blk.m.left >= 0) u = j - blk.m.diag + blk.m.left + 1;
    l = l < -kBig ? -kBig : (l > kBig ? kBig : l);
    u = u < -kBig ? -kBig : (u > kBig ? kBig : u);
    if (kr0 + 8 * hh >= blk.keys) u = l;
    qa[hh] = int(l);
    qb[hh] = int(u < l ? l : u);
  }
  const int len_q = int(blk.s.len_q);
  const unsigned char* sK = sm + Cfg::kOffK + w * 64 * 128;  // rows 64w.. of each chunk
  const unsigned char* sV = sm + Cfg::kOffV + w * 64 * 128;

  if (blk.total > 0) {
    mbar_wait(kv_full, 0);
    if (varlen && blk.keys < Cfg::kBlockN) {
      zero_rows<Cfg::kChunks>(sm + Cfg::kOffK, Cfg::kKVChunkBytes, blk.keys, Cfg::kBlockN);
      zero_rows<Cfg::kChunks>(sm + Cfg::kOffV, Cfg::kKVChunkBytes, blk.keys, Cfg::kBlockN);
      consumers_publish_smem();
    }
  }
  // First dq_acc row of this sequence (bwd::scratch_row) and this warpgroup's dQ
  // columns.
  const std::int64_t row_base = varlen ? blk.s.q_row0 : std::int64_t(blk.b) * p.seqlen_q;
  constexpr bool kSplit = Cfg::kDqMode == DqMode::split_cols;
  unsigned char* sDQ = sm + Cfg::kOffDQ + w * Cfg::kDQBytes;
  for (int it = 0; it < blk.total; ++it) {
    const int st = it % Cfg::kStages;
    int h, i0;
    blk.tile(it, h, i0);
    unsigned char* sQ = sm + Cfg::kOffQ + st * Cfg::kQBytes;
    unsigned char* sDO = sm + Cfg::kOffDO + st * Cfg::kQBytes;
    unsigned char* sDS = sm + Cfg::kOffDS + (it & 1) * Cfg::kDSBytes;
    const float* sl = reinterpret_cast<const float*>(sm + Cfg::kOffLse) + st * 64;
    const float* sd = reinterpret_cast<const float*>(sm + Cfg::kOffDsum) + st * 64;
    mbar_wait(&full[st], (it / Cfg::kStages) & 1);
    if (varlen && i0 + 64 > len_q) {
      const int r0 = len_q - i0;
      zero_rows<Cfg::kChunks>(sQ, Cfg::kQChunkBytes, r0, 64);
      zero_rows<Cfg::kChunks>(sDO, Cfg::kQChunkBytes, r0, 64);
      consumers_publish_smem();
    }

    // ---- S^T = K_w Q^T and dP^T = V_w dO^T (two commit groups: S first).
    float sacc[32], dp[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      fence_operand(sacc[i]);
      fence_operand(dp[i]);
    }
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int off = (ks / 4) * Cfg::kKVChunkBytes + (ks % 4) * 32;
      GemmS::ss(sacc, smem_desc(sK + off, 16, 1024), smem_desc(sQ + (ks / 4) * Cfg::kQChunkBytes + (ks % 4) * 32, 16, 1024),
                ks > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int off = (ks / 4) * Cfg::kKVChunkBytes + (ks % 4) * 32;
      GemmS::ss(dp, smem_desc(sV + off, 16, 1024), smem_desc(sDO + (ks / 4) * Cfg::kQChunkBytes + (ks % 4) * 32, 16, 1024),
                ks > 0);
    }
    wgmma_commit();

    // Visible query columns [lo, hi) of this tile for each of the thread's keys;
    // padded keys (past the sequence) see none. Rows past the sequence need no
    // mask (lse = +inf).
    int lo[2], hi[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      lo[hh] = min(max(qa[hh] - i0, 0), 64);
      hi[hh] = min(max(qb[hh] - i0, lo[hh]), 64);
    }
    const bool full_tile = __all_sync(0xffffffffu, lo[0] == 0 && lo[1] == 0 && hi[0] == 64 && hi[1] == 64);
    const int c0 = 2 * (lane % 4);  // this thread's first column in each 8-column block
    auto visible = [&](int i) {
      const int hh = (i >> 1) & 1, col = 8 * (i >> 2) + c0 + (i & 1);
      return col >= lo[hh] && col < hi[hh];
    };
    std::uint32_t pa[4][4], da[4][4];

    // Softcap: the derivative factor (1 - tanh^2) of each score, fp16 pairs
    // (values in [0, 1]; 16 registers instead of 32 for the tanh values).
    std::uint32_t gd[kSoftcap ? 16 : 1];

    // ---- P while dP^T is still on the tensor cores.
    wgmma_wait<1>();
#pragma unroll
    for (int i = 0; i < 32; ++i) fence_operand(sacc[i]);
    auto exp_phase = [&](auto masked) {
#pragma unroll
      for (int jb = 0; jb < 8; ++jb) {
        const float2 l2 = *reinterpret_cast<const float2*>(sl + 8 * jb + c0);
#pragma unroll
        for (int r = 0; r < 4; r += 2) {
          float x[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int i = 4 * jb + r + e;
            const float lse2 = e ? l2.y : l2.x;
            if constexpr (kSoftcap) {
              const float th = tanhf(sacc[i] * a.cap_pre);
              x[e] = fmaf(th, a.softcap_log2, -lse2);
              sacc[i] = 1.0f - th * th;  // parked here until packed below
            } else {
              x[e] = fmaf(sacc[i], a.scale_log2, -lse2);
            }
            if constexpr (decltype(masked)::value) x[e] = visible(i) ? x[e] : -INFINITY;
          }
          const int i = 4 * jb + r;
          if constexpr (kSoftcap) gd[i / 2] = pack2<__half>(sacc[i], sacc[i + 1]);
          sacc[i] = ex2_approx(x[0]);  // ex2.approx.ftz(-inf) = +0
          sacc[i + 1] = ex2_approx(x[1]);
        }
      }
    };
    if (full_tile)
      exp_phase(std::false_type{});
    else
      exp_phase(std::true_type{});
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) p_fragment<T>(sacc, ks, pa[ks]);

    // ---- dV += P^T dO; its GEMM runs under the dS phase.
#pragma unroll
    for (int i = 0; i < NC / 2; ++i) fence_operand(dv[i]);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) fence_operand(pa[ks][r]);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      GemmKV::rs(dv, pa[ks], smem_desc(sDO + ks * 2048, Cfg::kQChunkBytes, 1024));
    wgmma_commit();
    wgmma_wait<1>();  // dP^T is in; dV may still run
#pragma unroll
    for (int i = 0; i < 32; ++i) fence_operand(dp[i]);

    // ---- dS^T = P^T (dP^T - D) * scale (* softcap derivative). A masked element
    // has P = 0 and finite dP (padded K/V/Q/dO rows are zero): no test here. D = 128
    // takes P back from its 16-bit A fragments: keeping the fp32 copy live beside
    // dK, dV, dP^T and the fragments spilled (ptxas); the extra rounding (2^-9
    // relative for bf16) is the size of the one dS itself gets next.
#pragma unroll
    for (int jb = 0; jb < 8; ++jb) {
      const float2 d2 = *reinterpret_cast<const float2*>(sd + 8 * jb + c0);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int i = 4 * jb + r;
        const float pv = Cfg::kPFromFragments ? unpack_half<T>(pa[jb / 2][(jb & 1) * 2 + (r >> 1)], r & 1) : sacc[i];
        float f = p.scale;
        if constexpr (kSoftcap) f *= unpack_half<__half>(gd[i / 2], i & 1);
        dp[i] = pv * (dp[i] - ((r & 1) ? d2.y : d2.x)) * f;
      }
    }
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) p_fragment<T>(dp, ks, da[ks]);

    // ---- dS^T to shared memory ([key][query], 128-byte swizzle as wgmma reads it).
    // Register da[ks][r] holds row h = r & 1, column block 2ks + (r >> 1): one
    // 4-byte store each, conflict-free (8 rows x 4 lanes cover the 32 banks).
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = kr0 + 8 * (r & 1), jb = 2 * ks + (r >> 1);
        *reinterpret_cast<std::uint32_t*>(sDS + row * 128 + ((jb ^ (row & 7)) << 4) + 2 * c0) = da[ks][r];
      }

    // ---- dK += dS^T Q
#pragma unroll
    for (int i = 0; i < NC / 2; ++i) fence_operand(dk[i]);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) fence_operand(da[ks][r]);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      GemmKV::rs(dk, da[ks], smem_desc(sQ + ks * 2048, Cfg::kQChunkBytes, 1024));
    wgmma_commit();

    // ---- dQ = dS K over all 128 keys (see DqMode): both halves of dS^T must be
    // in. dV's GEMM is done first so that its A fragments (pa) are free for dQ's
    // accumulators.
    wgmma_wait<1>();
    // The warpgroup's dQ staging buffer is refilled after the barrier below: its
    // previous bulk reduce must have read it (long done by now: a tile ago).
    if constexpr (kDq)
      if (t == 0) ::cuda::ptx::cp_async_bulk_wait_group_read(::cuda::ptx::n32_t<0>{});
    consumers_publish_smem();  // both halves of dS^T
    // A compile-time condition where possible: a wgmma issued under a run-time
    // branch makes ptxas serialize every wgmma of the kernel at D = 128 (C7512).
    const bool do_dq = kDq && (Cfg::kDqMode != DqMode::alternate || (it & 1) == w);
    float dq[32];
    if (do_dq) {
#pragma unroll
      for (int i = 0; i < 32; ++i) fence_operand(dq[i]);
      wgmma_fence();
      const unsigned char* sKc = sm + Cfg::kOffK + (kSplit ? w * Cfg::kKVChunkBytes : 0);
#pragma unroll
      for (int ks = 0; ks < 8; ++ks)
        GemmS::ss_mn(dq, smem_desc(sDS + ks * 2048, Cfg::kDSBytes, 1024),
                     smem_desc(sKc + ks * 2048, Cfg::kKVChunkBytes, 1024), ks > 0);
      wgmma_commit();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < NC / 2; ++i) {
      fence_operand(dk[i]);
      fence_operand(dv[i]);
    }
    // Q, dO, lse and D of this stage are no longer read (dK/dV/dQ are complete).
    mbar_arrive(&empty[st]);
    // ---- dQ into its fp32 accumulator by the copy engine: the tile to shared
    // memory, one thread issues the bulk reductions. (v2 used 16 red.global.add.v2.f32
    // per thread: 12-15% slower at D = 128.)
    if (do_dq) {
#pragma unroll
      for (int i = 0; i < 32; ++i) fence_operand(dq[i]);
      // Two boxes of [64 rows][32 fp32 columns] with the 128-byte swizzle: row r at
      // r*128, its 16-byte unit u at (u ^ r%8)*16; a float2 per (row, 8-column block)
      // (two wavefronts per warp store, the minimum for 256 bytes).
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = 16 * warp + lane / 4 + 8 * hh;
#pragma unroll
        for (int jb = 0; jb < 8; ++jb) {
          const int u = 2 * (jb % 4) + (lane % 4) / 2;
          *reinterpret_cast<float2*>(sDQ + (jb / 4) * (Cfg::kDQBytes / 2) + r * 128 + ((u ^ (r & 7)) << 4) + 8 * (lane & 1)) =
              make_float2(dq[4 * jb + 2 * hh], dq[4 * jb + 2 * hh + 1]);
        }
      }
      ::cuda::ptx::fence_proxy_async(::cuda::ptx::space_shared);  // generic stores -> the copy engine
      named_barrier_sync(2 + w, 128);
      if (t == 0) {
        // Rows past the sequence carry exact zeros (P = 0 there: lse = +inf and zeroed
        // or zero-filled Q/dO rows), so adding them into the next sequence's rows is
        // harmless; rows past the tensor are clipped by the copy engine, as are
        // columns past a padded head dim.
        const int row = int(row_base + i0);
#pragma unroll
        for (int box = 0; box < 2; ++box) {
          const std::int32_t coords[3] = {(kSplit ? 64 * w : 0) + 32 * box, h, row};
          ::cuda::ptx::cp_reduce_async_bulk_tensor(::cuda::ptx::space_global, ::cuda::ptx::space_shared,
                                                   ::cuda::ptx::op_add, &a.tdq, coords,
                                                   sDQ + box * (Cfg::kDQBytes / 2));
        }
        ::cuda::ptx::cp_async_bulk_commit_group();
      }
    }
  }
  // Bulk reduces still reading this warpgroup's staging buffer (and writing dQ)
  // must finish before the CTA's shared memory goes away.
  if constexpr (kDq)
    if (t == 0) ::cuda::ptx::cp_async_bulk_wait_group(::cuda::ptx::n32_t<0>{});

  // ---- dK, dV of this warpgroup's keys: pairs of columns per lane.
  T* dkg = static_cast<T*>(p.dk);
  T* dvg = static_cast<T*>(p.dv);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int kr = kr0 + 8 * hh;
    if (kr >= blk.keys) continue;
    T* dkr = dkg + operand_offset(p.dk_strides, blk.b, blk.s.k_row0, blk.j0 + kr, blk.hk);
    T* dvr = dvg + operand_offset(p.dv_strides, blk.b, blk.s.k_row0, blk.j0 + kr, blk.hk);
#pragma unroll
    for (int jb = 0; jb < NC / 8; ++jb) {
      const int c = 8 * jb + 2 * (lane % 4);
      if (c < p.head_dim) {
        *reinterpret_cast<std::uint32_t*>(dkr + c) = pack2<T>(dk[4 * jb + 2 * hh], dk[4 * jb + 2 * hh + 1]);
        *reinterpret_cast<std::uint32_t*>(dvr + c) = pack2<T>(dv[4 * jb + 2 * hh], dv[4 * jb + 2 * hh + 1]);
      }
    }
  }
}

// D = 256, DqMode::query_halves: one CTA per 64-key block; both consumer warpgroups
// see all 64 keys. Per 64-query tile, warpgroup w:
//   S^T, dP^T of queries 32w..32w+31 over all 256 columns  (ss, m64n32k16 x 16)
//   P^T, dS^T of those 32 queries (registers), both to shared memory at query columns
//     32w.. ([key][query], 128-byte swizzle; two buffers each, alternating tiles)
//   barrier between the warpgroups (the other half of P^T and dS^T)
//   dV[:, 128w..] += P^T dO[:, 128w..], dK[:, 128w..] += dS^T Q[:, 128w..]
//                                     (ss m64n128k16, A K-major, B MN-major)
//   dQ[:, 128w..] = dS K[:, 128w..]   (ss_mn m64n64k16, two 64-column chunks),
//                                     staged in the spent Q/dO stage and added to the
//                                     fp32 accumulator by the copy engine.
// Registers: dK + dV 128, S^T + dP^T 32, dQ 2 x 32 (live only after S^T, dP^T die).
template <class Cfg, typename T, bool kSoftcap, bool kDq>
__device__ __forceinline__ void bwd_consumer_qh(const BwdArgs& a, const BwdBlock& blk, unsigned char* sm,
                                                std::uint64_t* bars, int w) {
  using GemmS = Wgmma<32, T>;   // S^T, dP^T: N = 32 queries
  using GemmQ = Wgmma<64, T>;   // dQ chunks: N = 64 columns
  using GemmKV = WgmmaBt<T>;    // dK, dV: N = 128 columns
  const BackwardParams& p = a.p;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  std::uint64_t* kv_full = bars;
  std::uint64_t* full = bars + 1;
  std::uint64_t* empty = bars + 1 + Cfg::kStages;

  float dk[64], dv[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) dk[i] = dv[i] = 0.0f;
  const int chunk0 = 2 * w;  // first 64-column chunk of this warpgroup's dK/dV/dQ
  const int q0 = 32 * w;     // first query of the tile this warpgroup scores
  // dQ through the copy engine (v4: 13-24% faster than float2 REDs on the H200): the
  // warpgroup's 64 x 128 fp32 dQ tile is staged in the Q and dO chunks of the tile's
  // stage that only its own dK/dV read (columns 128w..), free once those GEMMs are
  // waited for, and thread 0 hands the stage back to the producer one tile later,
  // when the bulk reduce has read it.
  constexpr bool dq_tma = kDq;

  // This thread's two keys and the queries that see each (as bwd_consumer).
  const int kr0 = 16 * warp + lane / 4;
  int qa[2], qb[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    constexpr std::int64_t kBig = std::int64_t(1) << 30;
    const std::int64_t j = blk.j0 + kr0 + 8 * hh;
    std::int64_t l = -kBig, u = kBig;
    if (blk.m.right >= 0) l = j - blk.m.diag - blk.m.right;
    if (blk.m.left >= 0) u = j - blk.m.diag + blk.m.left + 1;
    l = l < -kBig ? -kBig : (l > kBig ? kBig : l);
    u = u < -kBig ? -kBig : (u > kBig ? kBig : u);
    if (kr0 + 8 * hh >= blk.keys) u = l;
    qa[hh] = int(l);
    qb[hh] = int(u < l ? l : u);
  }
  const int len_q = int(blk.s.len_q);
  const unsigned char* sK = sm + Cfg::kOffK;
  const unsigned char* sV = sm + Cfg::kOffV;

  if (blk.total > 0) {
    mbar_wait(kv_full, 0);
    if (varlen && blk.keys < Cfg::kBlockN) {
      zero_rows<Cfg::kChunks>(sm + Cfg::kOffK, Cfg::kKVChunkBytes, blk.keys, Cfg::kBlockN);
      zero_rows<Cfg::kChunks>(sm + Cfg::kOffV, Cfg::kKVChunkBytes, blk.keys, Cfg::kBlockN);
      consumers_publish_smem();
    }
  }
  const std::int64_t row_base = varlen ? blk.s.q_row0 : std::int64_t(blk.b) * p.seqlen_q;
  const int c0 = 2 * (lane % 4);  // this thread's first column in each 8-column block
  for (int it = 0; it < blk.total; ++it) {
    const int st = it % Cfg::kStages;
    int h, i0;
    blk.tile(it, h, i0);
    unsigned char* sQ = sm + Cfg::kOffQ + st * Cfg::kQBytes;
    unsigned char* sDO = sm + Cfg::kOffDO + st * Cfg::kQBytes;
    unsigned char* sDS = sm + Cfg::kOffDS + (it & 1) * Cfg::kDSBytes;
    unsigned char* sP = sm + Cfg::kOffP + (it & 1) * Cfg::kDSBytes;
    const float* sl = reinterpret_cast<const float*>(sm + Cfg::kOffLse) + st * 64 + q0;
    const float* sd = reinterpret_cast<const float*>(sm + Cfg::kOffDsum) + st * 64 + q0;
    mbar_wait(&full[st], (it / Cfg::kStages) & 1);
    if (varlen && i0 + 64 > len_q) {
      const int r0 = len_q - i0;
      zero_rows<Cfg::kChunks>(sQ, Cfg::kQChunkBytes, r0, 64);
      zero_rows<Cfg::kChunks>(sDO, Cfg::kQChunkBytes, r0, 64);
      consumers_publish_smem();
    }

    // ---- S^T = K Q_w^T and dP^T = V dO_w^T (rows q0.. of Q/dO: 4 swizzle atoms in).
    float sacc[16], dp[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      fence_operand(sacc[i]);
      fence_operand(dp[i]);
    }
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 16; ++ks) {
      const int off = (ks / 4) * Cfg::kKVChunkBytes + (ks % 4) * 32;
      const int qoff = (ks / 4) * Cfg::kQChunkBytes + q0 * 128 + (ks % 4) * 32;
      GemmS::ss(sacc, smem_desc(sK + off, 16, 1024), smem_desc(sQ + qoff, 16, 1024), ks > 0);
    }
    wgmma_commit();
#pragma unroll
    for (int ks = 0; ks < 16; ++ks) {
      const int off = (ks / 4) * Cfg::kKVChunkBytes + (ks % 4) * 32;
      const int qoff = (ks / 4) * Cfg::kQChunkBytes + q0 * 128 + (ks % 4) * 32;
      GemmS::ss(dp, smem_desc(sV + off, 16, 1024), smem_desc(sDO + qoff, 16, 1024), ks > 0);
    }
    wgmma_commit();
    // dQ by the copy engine: the previous tile's stage goes back to the producer once
    // its bulk reduce has read the staging (here, so that the read overlaps this
    // tile's score GEMMs; the producer fills that stage for the next tile).
    if (dq_tma && t == 0 && it > 0) {
      ::cuda::ptx::cp_async_bulk_wait_group_read(::cuda::ptx::n32_t<0>{});
      mbar_arrive(&empty[(it + Cfg::kStages - 1) % Cfg::kStages]);
    }

    // Visible query columns [lo, hi) of this warpgroup's 32 for each of the thread's keys.
    int lo[2], hi[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      lo[hh] = min(max(qa[hh] - i0 - q0, 0), 32);
      hi[hh] = min(max(qb[hh] - i0 - q0, lo[hh]), 32);
    }
    const bool full_tile = __all_sync(0xffffffffu, lo[0] == 0 && lo[1] == 0 && hi[0] == 32 && hi[1] == 32);
    auto visible = [&](int i) {
      const int hh = (i >> 1) & 1, col = 8 * (i >> 2) + c0 + (i & 1);
      return col >= lo[hh] && col < hi[hh];
    };
    std::uint32_t pa[2][4], da[2][4];
    std::uint32_t gd[kSoftcap ? 8 : 1];

    // ---- P while dP^T is still on the tensor cores.
    wgmma_wait<1>();
#pragma unroll
    for (int i = 0; i < 16; ++i) fence_operand(sacc[i]);
    auto exp_phase = [&](auto masked) {
#pragma unroll
      for (int jb = 0; jb < 4; ++jb) {
        const float2 l2 = *reinterpret_cast<const float2*>(sl + 8 * jb + c0);
#pragma unroll
        for (int r = 0; r < 4; r += 2) {
          float x[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int i = 4 * jb + r + e;
            const float lse2 = e ? l2.y : l2.x;
            if constexpr (kSoftcap) {
              const float th = tanhf(sacc[i] * a.cap_pre);
              x[e] = fmaf(th, a.softcap_log2, -lse2);
              sacc[i] = 1.0f - th * th;  // parked here until packed below
            } else {
              x[e] = fmaf(sacc[i], a.scale_log2, -lse2);
            }
            if constexpr (decltype(masked)::value) x[e] = visible(i) ? x[e] : -INFINITY;
          }
          const int i = 4 * jb + r;
          if constexpr (kSoftcap) gd[i / 2] = pack2<__half>(sacc[i], sacc[i + 1]);
          sacc[i] = ex2_approx(x[0]);  // ex2.approx.ftz(-inf) = +0
          sacc[i + 1] = ex2_approx(x[1]);
        }
      }
    };
    if (full_tile)
      exp_phase(std::false_type{});
    else
      exp_phase(std::true_type{});
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) p_fragment<T>(sacc, ks, pa[ks]);

    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 16; ++i) fence_operand(dp[i]);
    // ---- dS^T = P^T (dP^T - D) * scale (* softcap derivative), P from its fp32 values.
#pragma unroll
    for (int jb = 0; jb < 4; ++jb) {
      const float2 d2 = *reinterpret_cast<const float2*>(sd + 8 * jb + c0);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int i = 4 * jb + r;
        float f = p.scale;
        if constexpr (kSoftcap) f *= unpack_half<__half>(gd[i / 2], i & 1);
        dp[i] = sacc[i] * (dp[i] - ((r & 1) ? d2.y : d2.x)) * f;
      }
    }
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) p_fragment<T>(dp, ks, da[ks]);

    // ---- P^T and dS^T to shared memory at query columns q0.. (column block jb + 4w):
    // register x[ks][r] holds row h = r & 1, column block 2ks + (r >> 1).
#pragma unroll
    for (int ks = 0; ks < 2; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = kr0 + 8 * (r & 1), jb = 2 * ks + (r >> 1) + 4 * w;
        const int off = row * 128 + ((jb ^ (row & 7)) << 4) + 2 * c0;
        *reinterpret_cast<std::uint32_t*>(sP + off) = pa[ks][r];
        *reinterpret_cast<std::uint32_t*>(sDS + off) = da[ks][r];
      }
    consumers_publish_smem();  // both query halves of P^T and dS^T

    // ---- dV += P^T dO, dK += dS^T Q (this warpgroup's 128 columns; K = 64 queries).
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      fence_operand(dv[i]);
      fence_operand(dk[i]);
    }
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      GemmKV::ss(dv, smem_desc(sP + ks * 32, 16, 1024),
                 smem_desc(sDO + chunk0 * Cfg::kQChunkBytes + ks * 2048, Cfg::kQChunkBytes, 1024), 1);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      GemmKV::ss(dk, smem_desc(sDS + ks * 32, 16, 1024),
                 smem_desc(sQ + chunk0 * Cfg::kQChunkBytes + ks * 2048, Cfg::kQChunkBytes, 1024), 1);
    wgmma_commit();
    // ---- dQ = dS K over the 64 keys, both 64-column chunks (no register of a
    // running wgmma is read before the wait below: see v2 on C75xx serialization).
    float dq0[32], dq1[32];
    if constexpr (kDq) {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        fence_operand(dq0[i]);
        fence_operand(dq1[i]);
      }
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)
        GemmQ::ss_mn(dq0, smem_desc(sDS + ks * 2048, Cfg::kDSBytes, 1024),
                     smem_desc(sK + chunk0 * Cfg::kKVChunkBytes + ks * 2048, Cfg::kKVChunkBytes, 1024), ks > 0);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)
        GemmQ::ss_mn(dq1, smem_desc(sDS + ks * 2048, Cfg::kDSBytes, 1024),
                     smem_desc(sK + (chunk0 + 1) * Cfg::kKVChunkBytes + ks * 2048, Cfg::kKVChunkBytes, 1024),
                     ks > 0);
      wgmma_commit();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      fence_operand(dk[i]);
      fence_operand(dv[i]);
    }
    // Q, dO, lse and D of this stage are no longer read (dq_tma: thread 0 arrives a
    // tile later, after the staging in this stage has been read by the copy engine).
    if (!(dq_tma && t == 0)) mbar_arrive(&empty[st]);
    if constexpr (kDq) {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        fence_operand(dq0[i]);
        fence_operand(dq1[i]);
      }
    }
    if constexpr (dq_tma) {
      // Four boxes of [64 rows][32 fp32 columns], 128-byte swizzle (as v3's staging at
      // D <= 128), box b = columns 128w + 32b: Q chunks 2w, 2w+1, then dO chunks 2w, 2w+1
      // (8 KB each, 1024-aligned; the other warpgroup reads only its own chunks).
      auto box_at = [&](int b) {
        return (b < 2 ? sQ : sDO) + (chunk0 + (b & 1)) * Cfg::kQChunkBytes;
      };
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = 16 * warp + lane / 4 + 8 * hh;
#pragma unroll
        for (int jb = 0; jb < 8; ++jb) {
          const int u = 2 * (jb % 4) + (lane % 4) / 2;
          const int off = r * 128 + ((u ^ (r & 7)) << 4) + 8 * (lane & 1);
          *reinterpret_cast<float2*>(box_at(jb / 4) + off) = make_float2(dq0[4 * jb + 2 * hh], dq0[4 * jb + 2 * hh + 1]);
          *reinterpret_cast<float2*>(box_at(2 + jb / 4) + off) =
              make_float2(dq1[4 * jb + 2 * hh], dq1[4 * jb + 2 * hh + 1]);
        }
      }
      ::cuda::ptx::fence_proxy_async(::cuda::ptx::space_shared);  // generic stores -> the copy engine
      named_barrier_sync(2 + w, 128);
      if (t == 0) {
        // Rows past the sequence add exact zeros (P = 0, zeroed Q/dO rows: as at D <= 128);
        // rows past the tensor and columns past the head dim are clipped by the copy
        // engine; boxes wholly past a padded head dim (D = 192) are skipped.
        const int row = int(row_base + i0);
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          const std::int32_t coords[3] = {128 * w + 32 * b, h, row};
          if (coords[0] < p.head_dim)
            ::cuda::ptx::cp_reduce_async_bulk_tensor(::cuda::ptx::space_global, ::cuda::ptx::space_shared,
                                                     ::cuda::ptx::op_add, &a.tdq, coords, box_at(b));
        }
        ::cuda::ptx::cp_async_bulk_commit_group();
      }
    }
  }

  // Bulk reduces still reading the staging (and writing dQ) finish before the CTA's
  // shared memory goes away.
  if (dq_tma && t == 0) ::cuda::ptx::cp_async_bulk_wait_group(::cuda::ptx::n32_t<0>{});

  // ---- dK, dV of the 64 keys, this warpgroup's columns: pairs per lane.
  T* dkg = static_cast<T*>(p.dk);
  T* dvg = static_cast<T*>(p.dv);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int kr = kr0 + 8 * hh;
    if (kr >= blk.keys) continue;
    T* dkr = dkg + operand_offset(p.dk_strides, blk.b, blk.s.k_row0, blk.j0 + kr, blk.hk);
    T* dvr = dvg + operand_offset(p.dv_strides, blk.b, blk.s.k_row0, blk.j0 + kr, blk.hk);
#pragma unroll
    for (int jb = 0; jb < 16; ++jb) {
      const int c = 64 * chunk0 + 8 * jb + c0;
      if (c < p.head_dim) {
        *reinterpret_cast<std::uint32_t*>(dkr + c) = pack2<T>(dk[4 * jb + 2 * hh], dk[4 * jb + 2 * hh + 1]);
        *reinterpret_cast<std::uint32_t*>(dvr + c) = pack2<T>(dv[4 * jb + 2 * hh], dv[4 * jb + 2 * hh + 1]);
      }
    }
  }
}

// kDq = false (deterministic mode): no dQ product; a separate pass writes dQ.
template <int D, typename T, bool kSoftcap, bool kDq, DqMode Mode>
__global__ void __launch_bounds__(BwdConfig<D, Mode>::kThreads, 1) backward_kernel(const __grid_constant__ BwdArgs a) {
  using Cfg = BwdConfig<D, Mode>;
  const BwdBlock blk(a.p, a.nkb, Cfg::kBlockN);
  if (!blk.valid) return;  // the whole CTA, before any barrier
  extern __shared__ unsigned char smem_raw[];
  // Aligned by an offset from smem_raw (not through an integer cast), so that the
  // compiler still knows these are shared-memory addresses (LDS/STS, not generic).
  const std::uint32_t raw = static_cast<std::uint32_t>(__cvta_generic_to_shared(smem_raw));
  unsigned char* sm = smem_raw + ((1024u - (raw & 1023u)) & 1023u);
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(sm + Cfg::kOffBar);
  if (threadIdx.x == 0) {
    ::cuda::ptx::mbarrier_init(&bars[0], 1);
    for (int s = 0; s < Cfg::kStages; ++s) {
      ::cuda::ptx::mbarrier_init(&bars[1 + s], 32);                  // the producer warp's lanes
      ::cuda::ptx::mbarrier_init(&bars[1 + Cfg::kStages + s], 256);  // every consumer thread
    }
    // Make the initialized barriers visible to the copy engine (async proxy).
    ::cuda::ptx::fence_mbarrier_init(::cuda::ptx::sem_release, ::cuda::ptx::scope_cluster);
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<Cfg::kProducerRegs>();
    if (threadIdx.x < 32) bwd_producer<Cfg>(a, blk, sm, bars);
  } else {
    setmaxnreg_inc<Cfg::kConsumerRegs>();
    if constexpr (Cfg::kQueryHalves)
      bwd_consumer_qh<Cfg, T, kSoftcap, kDq>(a, blk, sm, bars, wg - 1);
    else
      bwd_consumer<Cfg, T, kSoftcap, kDq>(a, blk, sm, bars, wg - 1);
  }
}

}  // namespace flashattn::detail::cuda::sm90
