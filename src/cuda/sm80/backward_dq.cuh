// The sm80 deterministic dQ pass (fp16/bf16): one block of 4 warps per (64-row
// query tile, q head, batch), each warp owning 16 query rows. Key tiles are
// visited in order and dQ stays in fp32 registers, so the sum has one fixed
// order and needs no atomics:
//   S = Q K^T, dP = dO V^T (queries as rows), P and dS as in dkdv_kernel,
//   dQ += dS K (the dS accumulators reused as A fragments, K^T via ldmatrix.trans).
#pragma once
#include "cuda/sm80/backward_kernel.cuh"

namespace flashattn::detail::cuda::sm80bwd {

template <int kD>
struct DqTraits {
  // Head dims above 128: 32-key tiles, so that S/dP leave registers for the
  // kD/8 x 4 fp32 of dQ and K/V stages fit 160 KiB.
  static constexpr int kWarps = 4, kThreads = 128, kBM = 64, kBN = kD > 128 ? 32 : 64;
  static constexpr int kRS = (kD + 63) / 64 * 64;
  // Q, dO; K, V in two stages (the next key tile loads while this one is used):
  // 96 KiB at kRS = 128, within sm_86/sm_89's 99 KiB; 128 KiB at kRS = 256.
  static constexpr std::size_t kSmemBytes = std::size_t(2 * kBM + 4 * kBN) * kRS * 2;
};

template <typename T, int kD>
__global__ void __launch_bounds__(128) dq_kernel(const BackwardParams p, const float* __restrict__ dsum) {
  using Tr = DqTraits<kD>;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kRS = Tr::kRS, kNT = kBN / 8, kDT = kD / 8;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sO = sQ + kBM * kRS;
  T* const sK0 = sO + kBM * kRS;       // two stages
  T* const sV0 = sK0 + 2 * kBN * kRS;  // two stages
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane >> 2, c2 = (lane & 3) * 2;

  const std::int64_t nqb = (p.seqlen_q + kBM - 1) / kBM;
  std::int64_t idx = blockIdx.x;
  const std::int64_t qb = idx % nqb;
  idx /= nqb;
  const int h = int(idx % p.heads_q);
  const int b = int(idx / p.heads_q);
  const SequenceView s = sequence(p, b);
  if (qb * kBM >= s.len_q) return;
  const int i0 = int(qb * kBM);
  const int rows = s.len_q - i0 < kBM ? int(s.len_q - i0) : kBM;
  const Mask m = make_mask(p, s);
  const int hk = kv_head(p, h);
  // begin/end are non-decreasing in i: the tile's keys are [begin(i0), end(last row)).
  const std::int64_t jlo = m.key_begin(i0), jhi = m.key_end(i0 + rows - 1);

  sm80::load_tile<T, kBM, kD, 128>(sQ, static_cast<const T*>(p.q) + operand_offset(p.q_strides, b, s.q_row0, i0, h),
                                   p.q_strides.row, rows, p.head_dim, tid);
  sm80::load_tile<T, kBM, kD, 128>(sO,
                                   static_cast<const T*>(p.dout) + operand_offset(p.dout_strides, b, s.q_row0, i0, h),
                                   p.dout_strides.row, rows, p.head_dim, tid);
  __pipeline_commit();

  // This lane's two rows: lse (log2 units), D, and visible key range.
  float lse2[2], dd[2];
  std::int64_t kbeg[2], kend[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int ql = warp * 16 + g + half * 8;
    lse2[half] = -INFINITY;
    dd[half] = 0.f;
    kbeg[half] = kend[half] = 0;
    if (ql < rows) {
      lse2[half] = p.lse[lse_offset(p, b, s.q_row0, i0 + ql, h)] * kLog2e;
      dd[half] = dsum[bwd::scratch_row(p, b, s, i0 + ql) * p.heads_q + h];
      kbeg[half] = m.key_begin(i0 + ql);
      kend[half] = m.key_end(i0 + ql);
    }
  }
  const float slope = alibi_slope(p, b, h);
  const bool shaped = p.softcap > 0.f || p.bias != nullptr || p.alibi != nullptr;
  const float scale_log2 = p.scale * kLog2e;

  float dQ[kDT][4];
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dQ[dt][e] = 0.f;

  auto load_kv = [&](std::int64_t j0, int st) {
    const int keys = s.len_k - j0 < kBN ? int(s.len_k - j0) : kBN;
    sm80::load_tile<T, kBN, kD, 128>(sK0 + st * kBN * kRS,
                                     static_cast<const T*>(p.k) + operand_offset(p.k_strides, b, s.k_row0, j0, hk),
                                     p.k_strides.row, keys, p.head_dim, tid);
    sm80::load_tile<T, kBN, kD, 128>(sV0 + st * kBN * kRS,
                                     static_cast<const T*>(p.v) + operand_offset(p.v_strides, b, s.k_row0, j0, hk),
                                     p.v_strides.row, keys, p.head_dim, tid);
    __pipeline_commit();
  };
  if (jlo < jhi) load_kv(jlo, 0);
  int st = 0;
  for (std::int64_t j0 = jlo; j0 < jhi; j0 += kBN, st ^= 1) {
    __pipeline_wait_prior(0);
    __syncthreads();  // this key tile has landed; every warp is done with the previous one
    // The next key tile goes to the stage the previous one used.
    if (j0 + kBN < jhi) load_kv(j0 + kBN, st ^ 1);
    const T* sK = sK0 + st * kBN * kRS;
    const T* sV = sV0 + st * kBN * kRS;
    const int lm_mat = opaque_lane() >> 3, lm_row = opaque_lane() & 7;

    float S[kNT][4], dP[kNT][4];
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) S[nt][e] = dP[nt][e] = 0.f;
    const int a_row = warp * 16 + lm_row + ((lm_mat & 1) << 3);
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      std::uint32_t qa[4], oa[4];
      ldmatrix_x4(qa, smem_addr(sQ + swizzle<kRS>(a_row, ks * 2 + (lm_mat >> 1))));
      ldmatrix_x4(oa, smem_addr(sO + swizzle<kRS>(a_row, ks * 2 + (lm_mat >> 1))));
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        const int key = np * 16 + lm_row + ((lm_mat >> 1) << 3);
        std::uint32_t kb4[4], vb4[4];
        ldmatrix_x4(kb4, smem_addr(sK + swizzle<kRS>(key, ks * 2 + (lm_mat & 1))));
        ldmatrix_x4(vb4, smem_addr(sV + swizzle<kRS>(key, ks * 2 + (lm_mat & 1))));
        mma_16816<T>(S[2 * np], qa, kb4[0], kb4[1]);
        mma_16816<T>(S[2 * np + 1], qa, kb4[2], kb4[3]);
        mma_16816<T>(dP[2 * np], oa, vb4[0], vb4[1]);
        mma_16816<T>(dP[2 * np + 1], oa, vb4[2], vb4[3]);
      }
    }

    // dS * softcap' * scale into dP (rows: queries g, g+8; columns: keys).
    if (!shaped) {
      // Branch-free for plain scores: a hidden score gets exponent -inf, which
      // ex2.approx.ftz maps to +0 (as in dkdv_kernel).
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int half = e >> 1;
          const std::int64_t gj = j0 + nt * 8 + c2 + (e & 1);
          const bool vis = lse2[half] != -INFINITY && gj >= kbeg[half] && gj < kend[half];
          const float pv = sm80::fast_exp2(vis ? fmaf(S[nt][e], scale_log2, -lse2[half]) : -INFINITY);
          dP[nt][e] = pv * (dP[nt][e] - dd[half]) * p.scale;
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int half = e >> 1;
          const int ql = warp * 16 + g + half * 8, kl = nt * 8 + c2 + (e & 1);
          const std::int64_t gj = j0 + kl;
          float dx = 0.f;
          if (lse2[half] != -INFINITY && gj >= kbeg[half] && gj < kend[half]) {
            float pv, deriv = 1.f;
            {
              const float x = S[nt][e] * p.scale;
              float val = x;
              if (p.softcap > 0.f) {
                const float th = tanhf(x / p.softcap);
                val = p.softcap * th;
                deriv = 1.f - th * th;
              }
              if (p.bias != nullptr) val += load_bias(p, bias_offset(p, b, h, i0 + ql, gj));
              if (p.alibi != nullptr) val -= slope * float(m.distance(i0 + ql, gj));
              pv = exp2f(val * kLog2e - lse2[half]);
            }
            dx = pv * (dP[nt][e] - dd[half]) * deriv * p.scale;
          }
          dP[nt][e] = dx;
        }
      }
    }

    // dQ += dS K: key tiles 2kk, 2kk+1 of dS form the A fragment; K^T fragments by
    // ldmatrix.trans of (keys 0-7 | 8-15) x (d 0-7 | 8-15 of the pair).
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      std::uint32_t a[4];
      a[0] = Pair<T>::pack(dP[2 * kk][0], dP[2 * kk][1]);
      a[1] = Pair<T>::pack(dP[2 * kk][2], dP[2 * kk][3]);
      a[2] = Pair<T>::pack(dP[2 * kk + 1][0], dP[2 * kk + 1][1]);
      a[3] = Pair<T>::pack(dP[2 * kk + 1][2], dP[2 * kk + 1][3]);
      const int key = kk * 16 + lm_row + ((lm_mat & 1) << 3);
#pragma unroll
      for (int dp = 0; dp < kDT / 2; ++dp) {
        std::uint32_t kb4[4];
        ldmatrix_x4_trans(kb4, smem_addr(sK + swizzle<kRS>(key, dp * 2 + (lm_mat >> 1))));
        mma_16816<T>(dQ[2 * dp], a, kb4[0], kb4[1]);
        mma_16816<T>(dQ[2 * dp + 1], a, kb4[2], kb4[3]);
      }
    }
  }
  __pipeline_wait_prior(0);  // Q/dO in flight when no key is visible

  T* dqg = static_cast<T*>(p.dq);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int ql = warp * 16 + g + half * 8;
    if (ql >= rows) continue;
    T* row = dqg + operand_offset(p.dq_strides, b, s.q_row0, i0 + ql, h);
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      const int c = dt * 8 + c2;
      if (c < p.head_dim)
        *reinterpret_cast<std::uint32_t*>(row + c) = Pair<T>::pack(dQ[dt][2 * half], dQ[dt][2 * half + 1]);
    }
  }
}

}  // namespace flashattn::detail::cuda::sm80bwd
