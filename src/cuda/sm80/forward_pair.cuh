// The sm80 forward for large head dims (v5, head dim 256, masks only): warps
// work in pairs on 32 query rows, split two ways. For S = Q K^T each warp of
// a pair takes one half of the key tile; for O += P V each takes one half of
// the head dim and needs the whole P row, so the halves of P (and the row
// maxima) cross through shared memory between the two warps.
//
// Why: at 16 rows per warp (forward_kernel.cuh with kMT = 1) a 64-key tile
// costs 144 ldmatrix.x4 per 256 mma per warp (Q 16, K 64, V 64): shared
// memory, not the tensor pipe, bounds that loop (docs/perf/cuda_forward.md,
// v4). 32 rows per warp would halve the K/V reads per mma, but its O (32 rows
// x 256 fp32) does not fit the registers; split over a pair, each warp keeps
// 32 x 128 of O (128 registers, as before) and reads Q 32 + K 32 + V 32 + the
// partner's P 4 = 100 ldmatrix.x4 per 256 mma.
//
// Per key tile (one K and one V buffer, as kStages == 1 in forward_kernel):
//   S half = Q K_half^T (V in flight), block barrier, next K in flight,
//   mask, row max -> shared, pair barrier, exp / rescale with the pair's max,
//   own P half -> shared (arrive), P_own V_dhalf, wait for the partner's P,
//   P_other V_dhalf, block barrier.
#pragma once
#include <cuda_pipeline.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/sm80/forward_kernel.cuh"
#include "cuda/sm80/ptx.cuh"
#include "cuda/sm80/softmax.cuh"
#include "cuda/sm80/tile.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::sm80 {

template <int kD_, int kBN_>
struct PairConfig {
  static constexpr int kD = kD_;
  static constexpr int kBN = kBN_;
  static constexpr int kWarps = 4;  // two pairs
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBM = kWarps / 2 * 32;
  static constexpr int kRS = kD;  // kD % 64 == 0: whole 128-byte lines
  static constexpr int kPRS = kBN;
  static constexpr std::size_t kSmemBytes =
      std::size_t(kBM + 2 * kBN) * kRS * 2        // Q, one K and one V buffer
      + std::size_t(kBM) * kPRS * 2               // P, 32 rows x kBN per pair
      + std::size_t(kWarps) * 32 * sizeof(float);  // row maxima / sums, per warp
  static_assert(kD % 64 == 0 && kBN % 64 == 0, "whole 128-byte lines for the swizzle");
};

template <typename T, typename Tr>
__global__ void __launch_bounds__(Tr::kThreads, 2)
    forward_pair_kernel(const ForwardParams p, std::int64_t num_tiles, std::int64_t total_work) {
  constexpr int kD = Tr::kD, kBN = Tr::kBN, kBM = Tr::kBM, kRS = Tr::kRS, kPRS = Tr::kPRS, kThreads = Tr::kThreads;
  constexpr int kMT = 2;              // m16 row tiles per warp
  constexpr int kHN = kBN / 2;        // keys of S per warp
  constexpr int kNT = kHN / 8;        // 8-key column tiles of S per warp
  constexpr int kHD = kD / 2;         // columns of O per warp
  constexpr int kDT = kHD / 8;        // 8-column tiles of O per warp
  constexpr int kKS = kD / 16;        // k-steps of Q K^T

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBM * kRS;
  T* sV = sK + kBN * kRS;
  T* sP = sV + kBN * kRS;                                  // [pair][32][kPRS]
  float* sRed = reinterpret_cast<float*>(sP + kBM * kPRS);  // [warp][32]

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int pair = warp / 2, half = warp % 2, partner = warp ^ 1;
  const int warp_row0 = pair * 32;
  const int key0 = half * kHN;  // this warp's keys of S within a tile
  const int col0 = half * kHD;  // this warp's columns of O
  const T* qg = static_cast<const T*>(p.q);
  const T* kg = static_cast<const T*>(p.k);
  const T* vg = static_cast<const T*>(p.v);
  T* og = static_cast<T*>(p.out);
  const float c = p.scale * kLog2e;  // lean: raw dot products, scale folded into exp2's FFMA

  // ldmatrix lane offsets as in forward_kernel; P rows are kPRS elements.
  const LaneOffsets<kRS> k_off(lane & 7, (lane >> 3) & 1, key0 + 8 * (lane >> 4));
  const LaneOffsets<kRS> v_off(lane & 7, lane >> 4, 8 * ((lane >> 3) & 1));
  const LaneOffsets<kRS> q_off(lane & 7, lane >> 4, warp_row0 + 8 * ((lane >> 3) & 1));
  const LaneOffsets<kPRS> p_off(lane & 7, lane >> 4, 8 * ((lane >> 3) & 1));
  const std::uint32_t sQ_addr = smem_addr(sQ), sK_addr = smem_addr(sK), sV_addr = smem_addr(sV);
  const std::uint32_t sP_addr = smem_addr(sP + pair * 32 * kPRS);
  T* sP_pair = sP + pair * 32 * kPRS;
  float* red_mine = sRed + warp * 32;
  const float* red_partner = sRed + partner * 32;
  // Named barriers: 1 + warp is "this warp's P half is in shared memory"
  // (arrive by the writer, sync by the partner); 5 + pair is both warps of
  // the pair exchanging row maxima or sums.
  const int bar_mine = 1 + warp, bar_partner = 1 + partner, bar_pair = 5 + pair;

  for (std::int64_t work = blockIdx.x; work < total_work; work += gridDim.x) {
    const std::int64_t tile = num_tiles - 1 - work % num_tiles;
    const std::int64_t bh = work / num_tiles;
    const int h = int(bh % p.heads_q);
    const int b = int(bh / p.heads_q);
    const SequenceView s = sequence(p, b);
    const std::int64_t m0 = tile * kBM;
    if (m0 >= s.len_q) continue;  // uniform over the block
    const int rows = s.len_q - m0 < kBM ? int(s.len_q - m0) : kBM;
    const Mask mask = make_mask(p, s);
    const int hk = kv_head(p, h);

    const int kb = int(mask.key_begin(m0));
    const int ke = int(mask.key_end(m0 + rows - 1));
    const int full_lo = int(mask.key_begin(m0 + rows - 1));
    const int full_hi = int(mask.key_end(m0));
    const int n_first = kb / kBN * kBN;
    const int diag = int(mask.diag);
    const int len_k = int(s.len_k), m0i = int(m0);
    auto row_info = [&](int mt) {
      const Mask mk{diag, p.window_left, p.window_right, len_k};
      RowInfo ri;
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = warp_row0 + mt * 16 + (lane >> 2) + hh * 8;
        ri.i[hh] = m0i + r;
        const bool ok = r < rows;
        ri.begin[hh] = ok ? int(mk.key_begin(m0i + r)) : 0;
        ri.end[hh] = ok ? int(mk.key_end(m0i + r)) : 0;
      }
      return ri;
    };

    const T* k_head = kg + operand_offset(p.k_strides, b, s.k_row0, 0, hk);
    const T* v_head = vg + operand_offset(p.v_strides, b, s.k_row0, 0, hk);
    auto load_k = [&](int n0) {
      const int valid = len_k - n0 < kBN ? len_k - n0 : kBN;
      load_tile<T, kBN, kD, kThreads, true>(sK, k_head + std::int64_t(n0) * p.k_strides.row, p.k_strides.row, valid,
                                            p.head_dim, tid);
    };
    auto load_v = [&](int n0) {
      const int valid = len_k - n0 < kBN ? len_k - n0 : kBN;
      load_tile<T, kBN, kD, kThreads, true>(sV, v_head + std::int64_t(n0) * p.v_strides.row, p.v_strides.row, valid,
                                            p.head_dim, tid);
    };

    // ---- prologue: Q and the first K
    __syncthreads();  // the previous work item is done with shared memory
    load_tile<T, kBM, kD, kThreads, true>(sQ, qg + operand_offset(p.q_strides, b, s.q_row0, m0, h), p.q_strides.row,
                                          rows, p.head_dim, tid);
    __pipeline_commit();
    if (n_first < ke) load_k(n_first);
    __pipeline_commit();

    float O[kMT][kDT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) O[mt][dt][e] = 0.0f;
    // Running max (log2 units, the pair's common value) and this lane's share
    // of the running sum over this warp's keys, per (row tile, row half).
    float m[kMT][2], l[kMT][2];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        m[mt][hh] = -INFINITY;
        l[mt][hh] = 0.0f;
      }
    __pipeline_wait_prior(0);
    __syncthreads();

    for (int n0 = n_first; n0 < ke; n0 += kBN) {
      // Entering: K visible to all, every warp done with the previous V.
      load_v(n0);
      __pipeline_commit();

      float S[kMT][kNT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[mt][nt][e] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        std::uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(a[mt], sQ_addr + q_off.at(mt * 16, ks));
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          std::uint32_t bk[4];
          ldmatrix_x4(bk, sK_addr + k_off.at(np * 16, ks));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_16816<T>(S[mt][2 * np], a[mt], bk[0], bk[1]);
            mma_16816<T>(S[mt][2 * np + 1], a[mt], bk[2], bk[3]);
          }
        }
      }

      __pipeline_wait_prior(0);  // V has landed
      __syncthreads();           // V visible; every warp is done with K
      if (n0 + kBN < ke) load_k(n0 + kBN);
      __pipeline_commit();

      const bool full = n0 >= full_lo && n0 + kBN <= full_hi;
      if (!full) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
          mask_scores<false>(S[mt], p, diag, row_info(mt), b, h, 0.0f, n0 + key0, lane);
      }

      // Row maxima over this warp's keys (raw dot products; c > 0), then the
      // pair's: lane 4r of each row group publishes its row.
      float mx[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          float t[kNT];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) t[nt] = fmaxf(S[mt][nt][2 * hh], S[mt][nt][2 * hh + 1]);
#pragma unroll
          for (int w = kNT / 2; w > 0; w /= 2)
#pragma unroll
            for (int i = 0; i < w; ++i) t[i] = fmaxf(t[i], t[i + w]);
          float v = t[0];
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
          v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
          mx[mt][hh] = v;
          if ((lane & 3) == 0) red_mine[mt * 16 + hh * 8 + (lane >> 2)] = v;
        }
      bar_sync(bar_pair, 64);
      float alpha[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const float v = fmaxf(mx[mt][hh], red_partner[mt * 16 + hh * 8 + (lane >> 2)]);
          const float m_new = fmaxf(m[mt][hh], v * c);
          // Rows that have seen only -inf keep base 0: exp2 then gives 0, not NaN.
          const float base = m_new == -INFINITY ? 0.0f : m_new;
          alpha[mt][hh] = fast_exp2(m[mt][hh] - base);
          m[mt][hh] = m_new;
          float t[kNT];
#pragma unroll
          for (int nt = 0; nt < kNT; ++nt) {
            S[mt][nt][2 * hh] = fast_exp2(fmaf(S[mt][nt][2 * hh], c, -base));
            S[mt][nt][2 * hh + 1] = fast_exp2(fmaf(S[mt][nt][2 * hh + 1], c, -base));
            t[nt] = S[mt][nt][2 * hh] + S[mt][nt][2 * hh + 1];
          }
#pragma unroll
          for (int w = kNT / 2; w > 0; w /= 2)
#pragma unroll
            for (int i = 0; i < w; ++i) t[i] += t[i + w];
          l[mt][hh] = l[mt][hh] * alpha[mt][hh] + t[0];
        }

      // This warp's P half as A fragments (accumulator layout of key tiles
      // 2j, 2j+1 = A fragment of a 16x16 product), and into shared memory
      // for the partner: lane (r, q) writes keys 2q, 2q+1 of rows r and r+8.
      std::uint32_t pa[kMT][kNT / 2][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int j = 0; j < kNT / 2; ++j) {
          pa[mt][j][0] = Pair<T>::pack(S[mt][2 * j][0], S[mt][2 * j][1]);
          pa[mt][j][1] = Pair<T>::pack(S[mt][2 * j][2], S[mt][2 * j][3]);
          pa[mt][j][2] = Pair<T>::pack(S[mt][2 * j + 1][0], S[mt][2 * j + 1][1]);
          pa[mt][j][3] = Pair<T>::pack(S[mt][2 * j + 1][2], S[mt][2 * j + 1][3]);
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = mt * 16 + (lane >> 2) + (e & 1) * 8;
            const int chunk = (key0 + (2 * j + (e >> 1)) * 8) / 8;
            *reinterpret_cast<std::uint32_t*>(sP_pair + swizzle<kPRS>(r, chunk) + (lane & 3) * 2) = pa[mt][j][e];
          }
        }
      bar_arrive(bar_mine, 64);

      if (__any_sync(0xffffffffu, alpha[0][0] != 1.0f || alpha[0][1] != 1.0f || alpha[1][0] != 1.0f ||
                                      alpha[1][1] != 1.0f)) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            O[mt][dt][0] *= alpha[mt][0];
            O[mt][dt][1] *= alpha[mt][0];
            O[mt][dt][2] *= alpha[mt][1];
            O[mt][dt][3] *= alpha[mt][1];
          }
      }

      // O += P V over this warp's columns: own keys first (from registers),
      // then the partner's (from shared memory, once it has arrived).
      auto pv = [&](const std::uint32_t (&a)[kMT][4], int kk) {
#pragma unroll
        for (int dp = 0; dp < kDT / 2; ++dp) {
          std::uint32_t bv[4];
          ldmatrix_x4_trans(bv, sV_addr + v_off.at(kk * 16, col0 / 16 + dp));
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_16816<T>(O[mt][2 * dp], a[mt], bv[0], bv[1]);
            mma_16816<T>(O[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
          }
        }
      };
#pragma unroll
      for (int j = 0; j < kNT / 2; ++j) {
        std::uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mt][e] = pa[mt][j][e];
        pv(a, key0 / 16 + j);
      }
      bar_sync(bar_partner, 64);
      const int okey0 = kHN - key0;
#pragma unroll
      for (int j = 0; j < kNT / 2; ++j) {
        std::uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) ldmatrix_x4(a[mt], sP_addr + p_off.at(mt * 16, okey0 / 16 + j));
        pv(a, okey0 / 16 + j);
      }

      __pipeline_wait_prior(0);  // the next K has landed
      __syncthreads();           // ... for all; every warp is done with V, P and the maxima
    }
    __pipeline_wait_prior(0);

    // ---- epilogue: the row sums of the pair, then this warp's columns of O.
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        float v = l[mt][hh];
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        l[mt][hh] = v;
        if ((lane & 3) == 0) red_mine[mt * 16 + hh * 8 + (lane >> 2)] = v;
      }
    bar_sync(bar_pair, 64);
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const float lt = l[mt][hh] + red_partner[mt * 16 + hh * 8 + (lane >> 2)];
        const int r = warp_row0 + mt * 16 + (lane >> 2) + hh * 8;
        if (r >= rows) continue;
        const float inv = lt > 0.0f ? 1.0f / lt : 0.0f;
        T* orow = og + operand_offset(p.out_strides, b, s.q_row0, m0 + r, h);
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          const int col = col0 + dt * 8 + (lane & 3) * 2;
          if (col < p.head_dim)
            *reinterpret_cast<std::uint32_t*>(orow + col) =
                Pair<T>::pack(O[mt][dt][2 * hh] * inv, O[mt][dt][2 * hh + 1] * inv);
        }
        if (half == 0 && (lane & 3) == 0)
          p.lse[lse_offset(p, b, s.q_row0, m0 + r, h)] =
              lt > 0.0f ? (m[mt][hh] + log2f(lt)) * kLn2 : -INFINITY;
      }
  }
}

}  // namespace flashattn::detail::cuda::sm80
