// The sm80 tensor-core forward kernel (fp16/bf16): mma.sync m16n8k16 with
// ldmatrix, K/V streamed through a 2- or 3-stage cp.async pipeline into swizzled
// shared memory, Q in registers where it fits, fp32 accumulators,
// online softmax in registers in log2 units.
//
// Stages of one work item (a 128-row query tile of one batch/head):
//   prologue  Q tile and the first K/V tile in flight; Q -> registers
//   main loop per key tile: refill the stage freed by the previous tile, S = Q K^T, mask/shape
//             (only on tiles that need it), online softmax, O += P V
//   epilogue  O / l and lse to global memory
#pragma once
#include <cuda_pipeline.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/sm80/ptx.cuh"
#include "cuda/sm80/softmax.cuh"
#include "cuda/sm80/tile.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::sm80 {

template <typename T> struct Pair;
template <> struct Pair<__half> {
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
};
template <> struct Pair<__nv_bfloat16> {
  static __device__ __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&v);
  }
};

// kShaped: softcap, bias or ALiBi present (or a scale <= 0); masks alone
// (causal, window, ragged tails) run in the lean instantiation.
// kLeanBlock (v5): cheaper per-block and per-tile bookkeeping: 32-bit work
// decoding (the launch guarantees total_work < 2^31), whole-tile loads
// without predicates, and output stores without column checks when
// head_dim == kD. ncu (d256, S=1k) put v4's fixed cost per block at ~2,150
// warp instructions against ~900 for FlashAttention-2's same-shaped kernel.
template <typename T, typename Tr, bool kLeanBlock = false>
__global__ void __launch_bounds__(Tr::kThreads, Tr::kMinBlocks)
    forward_kernel(const ForwardParams p, std::int64_t num_tiles, std::int64_t total_work) {
  constexpr int kD = Tr::kD;
  constexpr bool kShaped = Tr::kShaped;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kRS = Tr::kRS, kThreads = Tr::kThreads, kMT = Tr::kMT;
  constexpr int kNT = kBN / 8;   // 8-key column tiles of S
  constexpr int kDT = kD / 8;    // 8-column tiles of O
  constexpr int kKS = kD / 16;   // k-steps of Q K^T

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBM * kRS;                 // [stage][kBN][kRS]
  T* sV = sK + Tr::kStages * kBN * kRS;   // [stage][kBN][kRS]

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* og = static_cast<T*>(p.out);
  // Unshaped scores keep the scale folded into the exp2's FFMA.
  const float score_to_log2 = kShaped ? 1.0f : p.scale * kLog2e;

  const int warp_row0 = warp * 16 * kMT;  // first row of this warp in the tile
  // ldmatrix byte offsets of this lane (matrix lane/8, row lane%8 of an x4
  // load) for the four chunk pairs of a 128-byte line; any other k-step or row
  // block adds a constant (see LaneOffsets), so the loop keeps 12 offsets live
  // instead of one per (k-step, tile) (v2 spilled holding those).
  const LaneOffsets<kRS> k_off(lane & 7, (lane >> 3) & 1, 8 * (lane >> 4));
  const LaneOffsets<kRS> v_off(lane & 7, lane >> 4, 8 * ((lane >> 3) & 1));
  const LaneOffsets<kRS> q_off(lane & 7, lane >> 4, warp_row0 + 8 * ((lane >> 3) & 1));
  const std::uint32_t sQ_addr = smem_addr(sQ), sK_addr = smem_addr(sK), sV_addr = smem_addr(sV);

  for (std::int64_t work = blockIdx.x; work < total_work; work += gridDim.x) {
    // Tiles of one (batch, head) are adjacent (shared K/V in L2); within a head
    // the last query tile, the costliest under a causal mask, starts first.
    std::int64_t tile;
    int h, b;
    if constexpr (kLeanBlock) {
      const unsigned w = unsigned(work), nt = unsigned(num_tiles), hq = unsigned(p.heads_q);
      const unsigned bh = w / nt;
      tile = nt - 1 - (w - bh * nt);
      b = int(bh / hq);
      h = int(bh - unsigned(b) * hq);
    } else {
      tile = num_tiles - 1 - work % num_tiles;
      const std::int64_t bh = work / num_tiles;
      h = int(bh % p.heads_q);
      b = int(bh / p.heads_q);
    }
    const SequenceView s = sequence(p, b);
    const std::int64_t m0 = tile * kBM;
    if (m0 >= s.len_q) continue;  // uniform over the block
    const int rows = s.len_q - m0 < kBM ? int(s.len_q - m0) : kBM;
    const Mask mask = make_mask(p, s);
    const int hk = kv_head(p, h);

    // Keys any row of the tile sees ([kb, ke)), and the keys every row sees
    // ([full_lo, full_hi)): tiles inside the latter need no masking.
    const int kb = int(mask.key_begin(m0));
    const int ke = int(mask.key_end(m0 + rows - 1));
    const int full_lo = int(mask.key_begin(m0 + rows - 1));
    const int full_hi = int(mask.key_end(m0));
    const int n_first = kb / kBN * kBN;
    const int diag = int(mask.diag);

    // Row info for masking is rebuilt inside the (rare) masked tiles from
    // these few ints instead of being held across the loop (12 registers that
    // the BN = 64/128 tiles need for accumulators).
    const int len_k = int(s.len_k), m0i = int(m0);
    auto row_info = [&](int mt) {
      const Mask mk{diag, p.window_left, p.window_right, len_k};
      RowInfo ri;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = warp_row0 + mt * 16 + (lane >> 2) + half * 8;
        ri.i[half] = m0i + r;
        const bool ok = r < rows;
        ri.begin[half] = ok ? int(mk.key_begin(m0i + r)) : 0;
        ri.end[half] = ok ? int(mk.key_end(m0i + r)) : 0;
      }
      return ri;
    };
    const float slope = alibi_slope(p, b, h);

    const T* k_head = kg + operand_offset(p.k_strides, b, s.k_row0, 0, hk);
    const T* v_head = vg + operand_offset(p.v_strides, b, s.k_row0, 0, hk);
    // Whole tiles (every row valid, no padded columns) take the load without predicates.
    const bool all_cols = kLeanBlock && kRS == kD && p.head_dim == kD;
    auto load_k = [&](int n0, int stage) {
      const int valid = len_k - n0 < kBN ? len_k - n0 : kBN;
      if constexpr (kLeanBlock && kRS == kD) {
        if (all_cols && valid == kBN) {
          load_tile_full<T, kBN, kD, kThreads, true>(sK + stage * kBN * kRS,
                                                     k_head + std::int64_t(n0) * p.k_strides.row, p.k_strides.row, tid);
          return;
        }
      }
      load_tile<T, kBN, kD, kThreads, true>(sK + stage * kBN * kRS, k_head + std::int64_t(n0) * p.k_strides.row,
                                      p.k_strides.row, valid, p.head_dim, tid);
    };
    auto load_v = [&](int n0, int stage) {
      const int valid = len_k - n0 < kBN ? len_k - n0 : kBN;
      if constexpr (kLeanBlock && kRS == kD) {
        if (all_cols && valid == kBN) {
          load_tile_full<T, kBN, kD, kThreads, true>(sV + stage * kBN * kRS,
                                                     v_head + std::int64_t(n0) * p.v_strides.row, p.v_strides.row, tid);
          return;
        }
      }
      load_tile<T, kBN, kD, kThreads, true>(sV + stage * kBN * kRS, v_head + std::int64_t(n0) * p.v_strides.row,
                                      p.v_strides.row, valid, p.head_dim, tid);
    };

    // ---- prologue
    __syncthreads();  // the previous work item is done with shared memory
    {
      const T* q_tile = qg + operand_offset(p.q_strides, b, s.q_row0, m0, h);
      bool done = false;
      if constexpr (kLeanBlock && kRS == kD) {
        if (all_cols && rows == kBM) {
          load_tile_full<T, kBM, kD, kThreads, true>(sQ, q_tile, p.q_strides.row, tid);
          done = true;
        }
      }
      if (!done) load_tile<T, kBM, kD, kThreads, true>(sQ, q_tile, p.q_strides.row, rows, p.head_dim, tid);
    }
    __pipeline_commit();
    if constexpr (Tr::kSplitKV) {
      if (n_first < ke) load_k(n_first, 0);
      __pipeline_commit();
    } else {
      // The first kStages-1 key tiles in flight (one commit group each, empty
      // groups included, so that group counts stay uniform).
#pragma unroll
      for (int st = 0; st < Tr::kStages - 1; ++st) {
        if (n_first + st * kBN < ke) {
          load_k(n_first + st * kBN, st);
          load_v(n_first + st * kBN, st);
        }
        __pipeline_commit();
      }
    }

    float O[kMT][kDT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) O[mt][dt][e] = 0.0f;
    SoftmaxState sm[kMT];

    // A fragments of a 16-row tile: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15)
    // in the order a0..a3 of the mma.
    auto load_q = [&](std::uint32_t (&a)[4], int mt, int ks) {
      ldmatrix_x4(a, sQ_addr + q_off.at(mt * 16, ks));
    };
    constexpr int kQRegs = Tr::kQInRegs ? kKS : 1;
    std::uint32_t qf[kMT][kQRegs][4];
    // Q has landed (split K/V: the first K tile too)
    __pipeline_wait_prior(Tr::kSplitKV ? 0 : Tr::kStages - 1);
    __syncthreads();
    if constexpr (Tr::kQInRegs) {
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks) load_q(qf[mt][ks], mt, ks);
    }

    // ---- main loop over key tiles
    // kStages >= 2: one barrier per tile: after it, this tile's K/V are
    // visible to all and every warp is done with the previous tile, whose
    // stage is refilled with the tile kStages-1 ahead.
    // kStages == 1: entering a tile, its K is visible and every warp is done
    // with the previous V; V is loaded during S = Q K^T, the next K after the
    // barrier that ends every warp's use of this K.
    int stage = 0;
    for (int n0 = n_first; n0 < ke; n0 += kBN) {
      std::uint32_t sKs = sK_addr, sVs = sV_addr;
      if constexpr (Tr::kSplitKV) {
        load_v(n0, 0);
        __pipeline_commit();
      } else {
        __pipeline_wait_prior(Tr::kStages - 2);  // this tile's K/V have landed
        __syncthreads();
        const int refill = stage == 0 ? Tr::kStages - 1 : stage - 1;
        if (n0 + (Tr::kStages - 1) * kBN < ke) {
          load_k(n0 + (Tr::kStages - 1) * kBN, refill);
          load_v(n0 + (Tr::kStages - 1) * kBN, refill);
        }
        __pipeline_commit();
        sKs += stage * (kBN * kRS * 2);
        sVs += stage * (kBN * kRS * 2);
      }

      // S = Q K^T. B fragments for key tiles 2np, 2np+1: matrices
      // (keys 0-7 | 8-15 of the pair) x (k 0-7 | 8-15) -> b0,b1 of each; every
      // K fragment serves all kMT row tiles.
      float S[kMT][kNT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[mt][nt][e] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        std::uint32_t a_smem[kMT][4];
        if constexpr (!Tr::kQInRegs) {
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) load_q(a_smem[mt], mt, ks);
        }
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          std::uint32_t bk[4];
          ldmatrix_x4(bk, sKs + k_off.at(np * 16, ks));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            const std::uint32_t(&a)[4] = Tr::kQInRegs ? qf[mt][ks % kQRegs] : a_smem[mt];
            mma_16816<T>(S[mt][2 * np], a, bk[0], bk[1]);
            mma_16816<T>(S[mt][2 * np + 1], a, bk[2], bk[3]);
          }
        }
      }

      if constexpr (Tr::kSplitKV) {
        __pipeline_wait_prior(0);  // V has landed
        __syncthreads();           // V visible; every warp is done with K
        if (n0 + kBN < ke) load_k(n0 + kBN, 0);
        __pipeline_commit();
      }

      // Masking only on tiles some row does not fully see.
      const bool full = n0 >= full_lo && n0 + kBN <= full_hi;
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        if (kShaped || !full) mask_scores<kShaped>(S[mt], p, diag, row_info(mt), b, h, slope, n0, lane);
        sm[mt].update(S[mt], O[mt], score_to_log2);
      }

      // O += P V. P's accumulator layout for key tiles 2kk, 2kk+1 is exactly the
      // A fragment of a 16x16 product; V^T fragments come from ldmatrix.trans of
      // matrices (keys 0-7 | 8-15) x (d 0-7 | 8-15 of the pair).
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        std::uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          a[mt][0] = Pair<T>::pack(S[mt][2 * kk][0], S[mt][2 * kk][1]);
          a[mt][1] = Pair<T>::pack(S[mt][2 * kk][2], S[mt][2 * kk][3]);
          a[mt][2] = Pair<T>::pack(S[mt][2 * kk + 1][0], S[mt][2 * kk + 1][1]);
          a[mt][3] = Pair<T>::pack(S[mt][2 * kk + 1][2], S[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < kDT / 2; ++dp) {
          std::uint32_t bv[4];
          ldmatrix_x4_trans(bv, sVs + v_off.at(kk * 16, dp));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_16816<T>(O[mt][2 * dp], a[mt], bv[0], bv[1]);
            mma_16816<T>(O[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
          }
        }
      }
      if constexpr (Tr::kSplitKV) {
        __pipeline_wait_prior(0);  // the next K has landed
        __syncthreads();           // ... for all; every warp is done with V
      } else {
        stage = stage == Tr::kStages - 1 ? 0 : stage + 1;
      }
    }
    __pipeline_wait_prior(0);

    // ---- epilogue
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      sm[mt].finish();
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = warp_row0 + mt * 16 + (lane >> 2) + half * 8;
        if (r >= rows) continue;
        const float inv = sm[mt].inv_sum(half);
        T* orow = og + operand_offset(p.out_strides, b, s.q_row0, m0 + r, h);
        if (all_cols) {
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt)
            *reinterpret_cast<std::uint32_t*>(orow + dt * 8 + (lane & 3) * 2) =
                Pair<T>::pack(O[mt][dt][2 * half] * inv, O[mt][dt][2 * half + 1] * inv);
        } else {
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            const int c = dt * 8 + (lane & 3) * 2;
            if (c < p.head_dim)
              *reinterpret_cast<std::uint32_t*>(orow + c) =
                  Pair<T>::pack(O[mt][dt][2 * half] * inv, O[mt][dt][2 * half + 1] * inv);
          }
        }
        if ((lane & 3) == 0) p.lse[lse_offset(p, b, s.q_row0, m0 + r, h)] = sm[mt].lse(half);
      }
    }
  }
}

}  // namespace flashattn::detail::cuda::sm80
