// The sm80 tensor-core backward kernel (fp16/bf16): one block of kBN/16 warps
// per (kBN-key block, kv head, batch). Each warp owns 16 keys and keeps their dK, dV
// in fp32 registers for the whole block, summed over the q heads of a GQA group.
// Head dims above 128 split dK/dV by columns over kSplit blocks per key block
// (their accumulators would not fit in registers): each block recomputes S and
// dP over the whole head dim and accumulates its kD/kSplit columns of dK, dV
// and dQ, i.e. 7/5 of the arithmetic at kSplit = 2 instead of no tensor cores.
// Per query tile (BM rows), with Q/dO streamed by cp.async into swizzled smem:
//   S^T = K Q^T, dP^T = V dO^T       (mma, keys as rows: warp-private)
//   P = exp(S - lse), dS = P (dP - D), softcap factor, masks     (registers)
//   dV += P^T dO, dK += dS^T Q      (P/dS accumulators reused as A fragments)
//   dQ += dS K                       (dS through smem; fp32 atomics, or left to
//                                     the deterministic pass)
// With two stages (kStages = 2) the next tile's Q/dO/lse/D load is issued as soon
// as a tile starts and has a whole tile to land; with one stage (devices whose
// shared memory cannot hold two) it overlaps the dQ product only.
#pragma once
#include <cuda_pipeline.h>

#include <cstdint>
#include <type_traits>

#include "cuda/portable/backward_scratch.cuh"
#include "cuda/sm80/forward_kernel.cuh"
#include "cuda/sm80/ptx.cuh"
#include "cuda/sm80/tile.cuh"

namespace flashattn::detail::cuda::sm80bwd {

using sm80::ldmatrix_x4;
using sm80::ldmatrix_x4_trans;
using sm80::mma_16816;
using sm80::Pair;
using sm80::smem_addr;
using sm80::swizzle;

template <int kD, int kBM_, int kBN_, int kStages_ = 2, int kMinBlocks_ = 1, int kSplit_ = 1>
struct BwdTraits {
  static constexpr int kBN = kBN_, kBM = kBM_, kStages = kStages_, kSplit = kSplit_;
  static constexpr int kDA = kD / kSplit;           // dK/dV/dQ columns per block
  static constexpr int kMinBlocks = kMinBlocks_;  // blocks per SM asked of ptxas
  static constexpr int kWarps = kBN / 16, kThreads = kWarps * 32;  // a warp per 16 keys
  static constexpr int kRS = (kD + 63) / 64 * 64;  // as the forward tiles: whole 128-byte lines
  static constexpr int kNT = kBM / 8;               // 8-query tiles of S^T per warp
  static constexpr int kDT = kDA / 8;               // 8-column tiles of dK/dV
  static constexpr int kWM = kBM / 16, kWN = kWarps / kWM;  // warp grid of the dQ product
  static constexpr int kDQT = kDA / 8 / kWN;        // 8-column tiles of dQ per warp
  // K, V; Q, dO per stage; dS; lse, D per stage.
  static constexpr std::size_t kSmemElems =
      std::size_t(2 * kBN + 2 * kStages * kBM) * kRS + std::size_t(kBM) * kBN;
  static constexpr std::size_t kSmemBytes = kSmemElems * 2 + 2 * kStages * kBM * sizeof(float);
  static_assert(kDA % 16 == 0 && kBM % 16 == 0 && kWarps % kWM == 0 && kDQT % 2 == 0, "tile shape");
  static_assert(kStages == 1 || kStages == 2, "one or two Q/dO stages");
};

constexpr float kLog2e = 1.4426950408889634f;

// The lane index through an opaque read: ldmatrix addresses derived from it are
// recomputed in each iteration instead of being hoisted out of the query-tile
// loop, where dozens of them would stay live and push the accumulators to
// local memory.
__device__ __forceinline__ int opaque_lane() {
  int l;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(l));
  return l;
}

template <typename T, int kD, int kBM, int kBN, int kStages, int kMinBlocks, int kSplit>
__global__ void __launch_bounds__(kBN * 2, kMinBlocks) dkdv_kernel(const BackwardParams p, const bwd::Scratch sc) {
  using Tr = BwdTraits<kD, kBM, kBN, kStages, kMinBlocks, kSplit>;
  constexpr int kRS = Tr::kRS, kNT = Tr::kNT, kDT = Tr::kDT, kThreads = Tr::kThreads;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kBN * kRS;
  T* const sQ0 = sV + kBN * kRS;          // kStages tiles
  T* const sO0 = sQ0 + kStages * kBM * kRS;  // dO, kStages tiles
  T* sS = sO0 + kStages * kBM * kRS;  // dS * softcap' * scale, [query][key], swizzled rows of 64
  float* const sLse0 = reinterpret_cast<float*>(sS + kBM * kBN);  // kStages x kBM
  float* const sDsum0 = sLse0 + kStages * kBM;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, c2 = (lane & 3) * 2;

  const std::int64_t nkb = (p.seqlen_k + kBN - 1) / kBN;
  std::int64_t idx = blockIdx.x;
  // The column slices of one key block are neighbours in launch order, so their
  // K/V/Q/dO reads meet in L2.
  const int split = int(idx % kSplit);
  idx /= kSplit;
  const int chunk0 = split * (Tr::kDA / 8);  // first 8-column chunk of this block's slice
  const std::int64_t kb = idx % nkb;
  idx /= nkb;
  const int hk = int(idx % p.heads_kv);
  const int b = int(idx / p.heads_kv);
  const SequenceView s = sequence(p, b);
  if (kb * kBN >= s.len_k) return;
  const int j0 = int(kb * kBN);  // lengths < 2^31 - 256 (sm80_backward_unsupported)
  const int keys = s.len_k - j0 < kBN ? int(s.len_k - j0) : kBN;
  const Mask m = make_mask(p, s);
  std::int64_t qlo = 0, qhi = s.len_q;  // int64: the window arithmetic may leave int range
  if (m.right >= 0) qlo = j0 - m.diag - m.right > 0 ? j0 - m.diag - m.right : 0;
  if (m.left >= 0) qhi = j0 + keys - m.diag + m.left < s.len_q ? j0 + keys - m.diag + m.left : s.len_q;
  const int ntiles = qhi > qlo ? int((qhi - qlo + kBM - 1) / kBM) : 0;
  const int group = p.heads_q / p.heads_kv;
  const int total = ntiles * group;
  const int qfirst = int(qlo);

  const T* qg = static_cast<const T*>(p.q);
  const T* og = static_cast<const T*>(p.dout);
  const bool shaped = p.softcap > 0.f || p.bias != nullptr || p.alibi != nullptr;

  sm80::load_tile<T, kBN, kD, kThreads>(sK, static_cast<const T*>(p.k) + operand_offset(p.k_strides, b, s.k_row0, j0, hk),
                                   p.k_strides.row, keys, p.head_dim, tid);
  sm80::load_tile<T, kBN, kD, kThreads>(sV, static_cast<const T*>(p.v) + operand_offset(p.v_strides, b, s.k_row0, j0, hk),
                                   p.v_strides.row, keys, p.head_dim, tid);
  __pipeline_commit();

  // Query tile t of the flattened (head, tile) sequence.
  auto tile_of = [&](int t, int& h, int& i0) {
    h = hk * group + t / ntiles;
    i0 = qfirst + (t % ntiles) * kBM;
  };
  // Q/dO go by cp.async; lse and D are read into registers here and stored to
  // smem later (store_lse), so that the warps holding them do not wait for the
  // global reads before their next instruction.
  float pend_l = -INFINITY, pend_d = 0.f;
  auto load_q = [&](int t) {
    int h, i0;
    tile_of(t, h, i0);
    const int st = kStages == 1 ? 0 : t & 1;
    T* sQ = sQ0 + st * kBM * kRS;
    T* sO = sO0 + st * kBM * kRS;
    const int rows = s.len_q - i0 < kBM ? int(s.len_q - i0) : kBM;
    sm80::load_tile<T, kBM, kD, kThreads>(sQ, qg + operand_offset(p.q_strides, b, s.q_row0, i0, h), p.q_strides.row,
                                     rows, p.head_dim, tid);
    sm80::load_tile<T, kBM, kD, kThreads>(sO, og + operand_offset(p.dout_strides, b, s.q_row0, i0, h),
                                     p.dout_strides.row, rows, p.head_dim, tid);
    __pipeline_commit();
    if (tid < kBM) {
      const std::int64_t i = i0 + tid;
      pend_l = -INFINITY;
      pend_d = 0.f;
      if (i < s.len_q) {
        pend_l = p.lse[lse_offset(p, b, s.q_row0, i, h)];
        pend_d = sc.dsum[bwd::scratch_row(p, b, s, i) * p.heads_q + h];
      }
    }
  };
  auto store_lse = [&](int t) {
    const int st = kStages == 1 ? 0 : t & 1;
    if (tid < kBM) {
      // A row without visible keys (or past the sequence) stores +inf: its
      // exponent S*scale - lse is then -inf and P = 0 without a test.
      sLse0[st * kBM + tid] = pend_l == -INFINITY ? INFINITY : pend_l * kLog2e;
      sDsum0[st * kBM + tid] = pend_d;
    }
  };

  float dK[kDT][4], dV[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dK[dt][e] = dV[dt][e] = 0.f;

  if (total > 0) {
    load_q(0);
    store_lse(0);
  }
  for (int t = 0; t < total; ++t) {
    int h, i0;
    tile_of(t, h, i0);
    __pipeline_wait_prior(0);
    __syncthreads();  // Q/dO/lse/D of tile t (and K/V) are in smem; tile t-1 is done
    const int st = kStages == 1 ? 0 : t & 1;
    const T* sQ = sQ0 + st * kBM * kRS;
    const T* sO = sO0 + st * kBM * kRS;
    const float* sLse = sLse0 + st * kBM;
    const float* sDsum = sDsum0 + st * kBM;
    // Two stages: the next tile goes to the stage tile t-1 used, which every
    // warp has left (barrier above).
    if (kStages == 2 && t + 1 < total) load_q(t + 1);
    const int lm_mat = opaque_lane() >> 3, lm_row = opaque_lane() & 7;

    // ---- S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys.
    float S[kNT][4], dP[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) S[nt][e] = dP[nt][e] = 0.f;
    const int a_row = warp * 16 + lm_row + ((lm_mat & 1) << 3);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      std::uint32_t ka[4], va[4];
      ldmatrix_x4(ka, smem_addr(sK + swizzle<kRS>(a_row, ks * 2 + (lm_mat >> 1))));
      ldmatrix_x4(va, smem_addr(sV + swizzle<kRS>(a_row, ks * 2 + (lm_mat >> 1))));
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        const int q_row = np * 16 + lm_row + ((lm_mat >> 1) << 3);
        std::uint32_t qb[4], ob[4];
        ldmatrix_x4(qb, smem_addr(sQ + swizzle<kRS>(q_row, ks * 2 + (lm_mat & 1))));
        ldmatrix_x4(ob, smem_addr(sO + swizzle<kRS>(q_row, ks * 2 + (lm_mat & 1))));
        mma_16816<T>(S[2 * np], ka, qb[0], qb[1]);
        mma_16816<T>(S[2 * np + 1], ka, qb[2], qb[3]);
        mma_16816<T>(dP[2 * np], va, ob[0], ob[1]);
        mma_16816<T>(dP[2 * np + 1], va, ob[2], ob[3]);
      }
    }

    // ---- P and dS in registers (S <- P, dP <- dS * softcap' * scale).
    const int rows = s.len_q - i0 < kBM ? int(s.len_q - i0) : kBM;
    // This lane's two keys (rows g, g+8 of the warp's 16) see the tile's query
    // rows [lo, hi): the mask of mask.hpp solved for i, relative to i0.
    int lo[2], hi[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int kl = warp * 16 + g + half * 8;
      const std::int64_t j = j0 + kl;
      std::int64_t a = 0, z = rows;
      if (m.right >= 0 && j - m.diag - m.right - i0 > a) a = j - m.diag - m.right - i0;
      if (m.left >= 0 && j - m.diag + m.left + 1 - i0 < z) z = j - m.diag + m.left + 1 - i0;
      if (kl >= keys) z = 0;
      lo[half] = int(a);
      hi[half] = int(z < a ? a : z);
    }
    const float slope = alibi_slope(p, b, h);
    // ALiBi distance is |(i0 + diag - j0) + ql - kl|.
    const int dist0 = int(i0 + m.diag - j0);
    float* dbias = sc.dbias_acc == nullptr ? nullptr
                                           : sc.dbias_acc + bwd::dbias_slot(p, b, h) * p.seqlen_q * p.seqlen_k +
                                                 i0 * p.seqlen_k + j0;
    const std::int64_t bias0 = p.bias == nullptr ? 0 : bias_offset(p, b, h, i0, j0);
    const float scale_log2 = p.scale * kLog2e;
    // Plain scores (the common case): no branches, so the phase is a few
    // instructions per element. A hidden score gets exponent -inf, which
    // ex2.approx.ftz maps to +0. Rows without keys and rows past the sequence
    // have lse = +inf (store_lse), so where every row of the tile from 0 to the
    // tile's last row sees this lane's keys no test is needed at all (padded
    // keys, kl >= keys, have hi = 0 and stay masked: 2^-lse may overflow).
    auto plain = [&](auto masked) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
        const float2 l2 = *reinterpret_cast<const float2*>(sLse + nt * 8 + c2);
        const float2 d2 = *reinterpret_cast<const float2*>(sDsum + nt * 8 + c2);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = nt * 8 + c2 + (e & 1);
          const float lse2 = (e & 1) ? l2.y : l2.x;
          const float dsum = (e & 1) ? d2.y : d2.x;
          float x = fmaf(S[nt][e], scale_log2, -lse2);
          if constexpr (decltype(masked)::value) x = ql >= lo[e >> 1] && ql < hi[e >> 1] ? x : -INFINITY;
          const float pv = sm80::fast_exp2(x);
          S[nt][e] = pv;
          dP[nt][e] = pv * (dP[nt][e] - dsum) * p.scale;
        }
      }
    };
    if (!shaped) {
      const bool full = lo[0] == 0 && lo[1] == 0 && hi[0] == rows && hi[1] == rows;
      if (__all_sync(0xffffffffu, full))
        plain(std::false_type{});
      else
        plain(std::true_type{});
    } else {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kl = warp * 16 + g + (e >> 1) * 8;  // key within the block
          const int ql = nt * 8 + c2 + (e & 1);         // query within the tile
          const float lse2 = sLse[ql];
          float pv = 0.f, dx = 0.f;
          if (ql >= lo[e >> 1] && ql < hi[e >> 1] && lse2 != INFINITY) {
            float ds;
            {
              const float x = S[nt][e] * p.scale;
              float val = x, deriv = 1.f;
              if (p.softcap > 0.f) {
                const float th = tanhf(x / p.softcap);
                val = p.softcap * th;
                deriv = 1.f - th * th;
              }
              if (p.bias != nullptr) val += load_bias(p, bias0 + ql * p.bias_row + kl);
              if (p.alibi != nullptr) val -= slope * float(abs(dist0 + ql - kl));
              pv = exp2f(val * kLog2e - lse2);
              ds = pv * (dP[nt][e] - sDsum[ql]);
              dx = ds * deriv * p.scale;
            }
            if (dbias != nullptr && split == 0) atomicAdd(dbias + std::int64_t(ql) * p.seqlen_k + kl, ds);
          }
          S[nt][e] = pv;
          dP[nt][e] = dx;
        }
      }
    }
    // dS to smem as [query][key] for the dQ product.
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kl = warp * 16 + g + (e >> 1) * 8, ql = nt * 8 + c2 + (e & 1);
        sS[swizzle<kBN>(ql, kl >> 3) + (kl & 7)] = from_float<T>(dP[nt][e]);
      }

    // ---- dV += P^T dO, dK += dS^T Q: the accumulators of query tiles 2kk,
    // 2kk+1 are the A fragment of a 16x16 product.
#pragma unroll
    for (int kk = 0; kk < kBM / 16; ++kk) {
      std::uint32_t pa[4], da[4];
      pa[0] = Pair<T>::pack(S[2 * kk][0], S[2 * kk][1]);
      pa[1] = Pair<T>::pack(S[2 * kk][2], S[2 * kk][3]);
      pa[2] = Pair<T>::pack(S[2 * kk + 1][0], S[2 * kk + 1][1]);
      pa[3] = Pair<T>::pack(S[2 * kk + 1][2], S[2 * kk + 1][3]);
      da[0] = Pair<T>::pack(dP[2 * kk][0], dP[2 * kk][1]);
      da[1] = Pair<T>::pack(dP[2 * kk][2], dP[2 * kk][3]);
      da[2] = Pair<T>::pack(dP[2 * kk + 1][0], dP[2 * kk + 1][1]);
      da[3] = Pair<T>::pack(dP[2 * kk + 1][2], dP[2 * kk + 1][3]);
      const int row = kk * 16 + lm_row + ((lm_mat & 1) << 3);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        std::uint32_t ob[4], qb[4];
        ldmatrix_x4_trans(ob, smem_addr(sO + swizzle<kRS>(row, chunk0 + dp * 2 + (lm_mat >> 1))));
        ldmatrix_x4_trans(qb, smem_addr(sQ + swizzle<kRS>(row, chunk0 + dp * 2 + (lm_mat >> 1))));
        mma_16816<T>(dV[2 * dp], pa, ob[0], ob[1]);
        mma_16816<T>(dV[2 * dp + 1], pa, ob[2], ob[3]);
        mma_16816<T>(dK[2 * dp], da, qb[0], qb[1]);
        mma_16816<T>(dK[2 * dp + 1], da, qb[2], qb[3]);
      }
    }
    // Two stages: tile t+1's lse/D go to the stage that tile t-1 used.
    if (kStages == 2 && t + 1 < total) store_lse(t + 1);
    __syncthreads();  // dS complete; every warp is done with Q/dO/lse/D
    if (kStages == 1 && t + 1 < total) load_q(t + 1);  // overlaps the dQ product below

    // ---- dQ += dS K (fp32 atomics).
    if (sc.dq_acc != nullptr) {
      const int wm = warp % Tr::kWM, wn = warp / Tr::kWM;
      float dQ[Tr::kDQT][4];
#pragma unroll
      for (int dt = 0; dt < Tr::kDQT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dQ[dt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kBN / 16; ++kk) {
        std::uint32_t a[4];
        ldmatrix_x4(a, smem_addr(sS + swizzle<kBN>(wm * 16 + lm_row + ((lm_mat & 1) << 3), kk * 2 + (lm_mat >> 1))));
        const int krow = kk * 16 + lm_row + ((lm_mat & 1) << 3);
#pragma unroll
        for (int dp = 0; dp < Tr::kDQT / 2; ++dp) {
          std::uint32_t kb4[4];
          ldmatrix_x4_trans(kb4,
                            smem_addr(sK + swizzle<kRS>(krow, chunk0 + wn * Tr::kDQT + dp * 2 + (lm_mat >> 1))));
          mma_16816<T>(dQ[2 * dp], a, kb4[0], kb4[1]);
          mma_16816<T>(dQ[2 * dp + 1], a, kb4[2], kb4[3]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int ql = wm * 16 + g + half * 8;
        if (ql >= rows) continue;
        float* dst = sc.dq_acc + (bwd::scratch_row(p, b, s, i0 + ql) * p.heads_q + h) * p.head_dim;
#pragma unroll
        for (int dt = 0; dt < Tr::kDQT; ++dt) {
          const int c = (chunk0 + wn * Tr::kDQT + dt) * 8 + c2;
          if (c < p.head_dim) {
#if __CUDA_ARCH__ >= 900
            atomicAdd(reinterpret_cast<float2*>(dst + c), make_float2(dQ[dt][2 * half], dQ[dt][2 * half + 1]));
#else
            atomicAdd(dst + c, dQ[dt][2 * half]);
            atomicAdd(dst + c + 1, dQ[dt][2 * half + 1]);
#endif
          }
        }
      }
    }
    // One stage: no warp reads lse/D after the barrier above.
    if (kStages == 1 && t + 1 < total) store_lse(t + 1);
  }

  __pipeline_wait_prior(0);  // nothing left in flight when no query sees these keys

  // ---- dK, dV: this warp's 16 keys, pairs of columns per lane.
  T* dkg = static_cast<T*>(p.dk);
  T* dvg = static_cast<T*>(p.dv);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int kl = warp * 16 + g + half * 8;
    if (kl >= keys) continue;
    T* dkr = dkg + operand_offset(p.dk_strides, b, s.k_row0, j0 + kl, hk);
    T* dvr = dvg + operand_offset(p.dv_strides, b, s.k_row0, j0 + kl, hk);
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      const int c = (chunk0 + dt) * 8 + c2;
      if (c < p.head_dim) {
        *reinterpret_cast<std::uint32_t*>(dkr + c) = Pair<T>::pack(dK[dt][2 * half], dK[dt][2 * half + 1]);
        *reinterpret_cast<std::uint32_t*>(dvr + c) = Pair<T>::pack(dV[dt][2 * half], dV[dt][2 * half + 1]);
      }
    }
  }
}

}  // namespace flashattn::detail::cuda::sm80bwd
