// The register-tiled fp32 forward (exact fp32 FMA, no TF32), the fp32 path
// for head dims 33..256 where its shared memory fits; the element-per-lane
// kernel in forward_kernel.cuh stays the every-dtype baseline.
//
// A block of 256 threads owns kBM = 128 query rows (64 at head dim 256) of one
// (batch, head), as a 16 x 16 grid of threads (ty, tx). Per key tile of kBN = 64 keys:
//   S = Q K^T   thread (ty, tx) computes rows ty + 16*i (i < kBM/16) x keys tx + 16*jj
//               (jj < 4) from shared-memory tiles, 4 head-dim columns per step:
//               12 float4 loads feed 128 FMA (the SIMT GEMM pattern);
//   softmax     the row's 64 scores sit in the 16 lanes of one half-warp: the
//               max is a 4-step xor shuffle, the sum stays per thread until
//               the end;
//   O += P V    P goes through shared memory; thread (ty, tx) owns the same 8
//               rows x columns tx*4 + 64*cc + {0..3}: per 4 keys, 8 + 4*kD/64
//               float4 loads feed 32*kD/16 FMA.
// K and V have one buffer each, loaded with cp.async (a plain copy below sm_80)
// so that V(i) lands during S(i) and K(i+1) during softmax and P V(i).
// Element-wise loads: any stride, any alignment; every feature of mask.hpp.
#pragma once
#include <cuda_pipeline.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::portable {

// kBM = 64 at head dim 256 (v5): 128 rows of Q alone would take 133 KB of
// shared memory; 64 rows keep the whole tile at 214 KB (sm_90's 227 KB fit).
template <int kD>
struct F32Tile {
  static constexpr int kThreads = 256;
  static constexpr int kBM = kD > 128 ? 64 : 128, kBN = 64;
  static constexpr int kRows = kBM / 16;  // rows per thread
  static constexpr int kKeys = kBN / 16;  // keys per thread in S
  static constexpr int kCC = kD / 64;     // float4 column groups per thread in O
  static constexpr int kQS = kD + 4;      // padded row stride of sQ, sK (floats): adjacent rows 4 banks apart
  static constexpr int kPS = kBN + 4;     // row stride of sP
  static constexpr int kVS = kD;          // a half-warp reads 256 contiguous bytes of a V row
  static constexpr std::size_t kSmemFloats = std::size_t(kBM) * kQS + std::size_t(kBN) * kQS +
                                             std::size_t(kBN) * kVS + std::size_t(kBM) * kPS;
  static constexpr std::size_t kSmemBytes = kSmemFloats * sizeof(float);
  static constexpr int kMinBlocks = 1;
  static_assert(kD % 64 == 0, "head-dim buckets of the tiled kernel are 64, 128 and 256");
};

// Copies rows [0, kRows) x columns [0, kD) of an operand into shared memory
// (row stride `ld`); rows >= valid and columns >= hd are zero-filled without a
// global read. A thread keeps one column (group) for all its rows, so its
// source advances by a fixed row step. `vec`: 16 bytes per cp.async (head dim,
// row stride and base all multiples of 4 floats / 16 bytes), else 4 bytes.
template <int kRows, int kD, int kThreads>
__device__ __forceinline__ void f32_load_tile(float* smem, int ld, const float* g, std::int64_t row_stride, int valid,
                                              int hd, int tid, bool vec) {
  if (vec) {
    constexpr int kCh = kD / 4;  // 16-byte chunks per row
    constexpr int kStep = kThreads / kCh;
    static_assert(kThreads % kCh == 0 && kRows % kStep == 0, "whole rows per pass");
    const int r0 = tid / kCh, c = (tid % kCh) * 4;
    const bool col_ok = c < hd;
    const float* src = g + r0 * row_stride + c;
    float* dst = smem + r0 * ld + c;
#pragma unroll
    for (int it = 0; it < kRows / kStep; ++it) {
      const bool ok = col_ok && r0 + it * kStep < valid;
      __pipeline_memcpy_async(dst + it * kStep * ld, ok ? src : g, 16, ok ? 0 : 16);
      src += kStep * row_stride;
    }
  } else {
    constexpr int kStep = kThreads / kD;
    static_assert(kThreads % kD == 0 && kRows % kStep == 0, "whole rows per pass");
    const int r0 = tid / kD, c = tid % kD;
    const bool col_ok = c < hd;
    const float* src = g + r0 * row_stride + c;
    float* dst = smem + r0 * ld + c;
#pragma unroll 8
    for (int it = 0; it < kRows / kStep; ++it) {
      const bool ok = col_ok && r0 + it * kStep < valid;
      __pipeline_memcpy_async(dst + it * kStep * ld, ok ? src : g, 4, ok ? 0 : 4);
      src += kStep * row_stride;
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(F32Tile<kD>::kThreads, F32Tile<kD>::kMinBlocks)
    forward_f32_kernel(const ForwardParams p, std::int64_t num_tiles, std::int64_t total_work) {
  using Tl = F32Tile<kD>;
  constexpr int kBM = Tl::kBM, kBN = Tl::kBN, kR = Tl::kRows, kK = Tl::kKeys, kCC = Tl::kCC;
  constexpr int kQS = Tl::kQS, kPS = Tl::kPS, kVS = Tl::kVS, kThreads = Tl::kThreads;
  constexpr float kLog2eF = 1.4426950408889634f;

  extern __shared__ __align__(16) float smem_f32[];
  float* sQ = smem_f32;
  float* sK = sQ + kBM * kQS;
  float* sV = sK + kBN * kQS;
  float* sP = sV + kBN * kVS;

  const int tid = threadIdx.x;
  const int ty = tid / 16, tx = tid % 16;
  const int hd = p.head_dim;
  const float* qg = static_cast<const float*>(p.q);
  const float* kg = static_cast<const float*>(p.k);
  const float* vg = static_cast<const float*>(p.v);
  float* og = static_cast<float*>(p.out);
  // Plain scores keep scale*log2(e) folded into the exponent's FFMA; shaped
  // ones (softcap, bias, ALiBi, scale <= 0) arrive in log2 units.
  const bool shaped = p.softcap > 0.0f || p.bias != nullptr || p.alibi != nullptr || !(p.scale > 0.0f);
  const float c_log2 = shaped ? 1.0f : p.scale * kLog2eF;
  // 16-byte copies where every row of q, k, v starts 16-byte aligned.
  auto al16 = [](const void* ptr) { return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0; };
  const bool vec = hd % 4 == 0 && al16(p.q) && al16(p.k) && al16(p.v) && p.q_strides.row % 4 == 0 &&
                   p.k_strides.row % 4 == 0 && p.v_strides.row % 4 == 0 && p.q_strides.batch % 4 == 0 &&
                   p.k_strides.batch % 4 == 0 && p.v_strides.batch % 4 == 0 && p.q_strides.head % 4 == 0 &&
                   p.k_strides.head % 4 == 0 && p.v_strides.head % 4 == 0;

  for (std::int64_t work = blockIdx.x; work < total_work; work += gridDim.x) {
    // Tiles of one (batch, head) adjacent (K/V shared in L2), the last query
    // tile of a head (the most keys under a causal mask) first.
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
    const std::int64_t kb = mask.key_begin(m0);
    const std::int64_t ke = mask.key_end(m0 + rows - 1);
    const std::int64_t full_lo = mask.key_begin(m0 + rows - 1);  // keys every row sees: [full_lo, full_hi)
    const std::int64_t full_hi = mask.key_end(m0);
    const float slope = alibi_slope(p, b, h);
    const float* k_head = kg + operand_offset(p.k_strides, b, s.k_row0, 0, hk);
    const float* v_head = vg + operand_offset(p.v_strides, b, s.k_row0, 0, hk);
    auto valid_keys = [&](std::int64_t n0) { return s.len_k - n0 < kBN ? int(s.len_k - n0) : kBN; };

    __syncthreads();  // the previous work item is done with shared memory
    if (kb < ke) {
      // Q (plain loads, converted once) and the first K tile in one group.
      const float* q_tile = qg + operand_offset(p.q_strides, b, s.q_row0, m0, h);
      f32_load_tile<kBM, kD, kThreads>(sQ, kQS, q_tile, p.q_strides.row, rows, hd, tid, vec);
      f32_load_tile<kBN, kD, kThreads>(sK, kQS, k_head + kb * p.k_strides.row, p.k_strides.row, valid_keys(kb), hd,
                                       tid, vec);
    }
    __pipeline_commit();

    float o[kR][kCC][4];
    float m_run[kR], l_run[kR];
#pragma unroll
    for (int i = 0; i < kR; ++i) {
      m_run[i] = -INFINITY;
      l_run[i] = 0.0f;
#pragma unroll
      for (int cc = 0; cc < kCC; ++cc)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[i][cc][e] = 0.0f;
    }

    for (std::int64_t n0 = kb; n0 < ke; n0 += kBN) {
      __pipeline_wait_prior(0);  // K(n0) (and Q) landed
      __syncthreads();           // ... for every thread; P V of the previous tile done (sP, sV free)
      f32_load_tile<kBN, kD, kThreads>(sV, kVS, v_head + n0 * p.v_strides.row, p.v_strides.row, valid_keys(n0), hd,
                                       tid, vec);
      __pipeline_commit();

      // S = Q K^T over 4 head-dim columns per step.
      float sc[kR][kK];
#pragma unroll
      for (int i = 0; i < kR; ++i)
#pragma unroll
        for (int jj = 0; jj < kK; ++jj) sc[i][jj] = 0.0f;
#pragma unroll 2
      for (int d = 0; d < kD; d += 4) {
        float4 kv[kK];
#pragma unroll
        for (int jj = 0; jj < kK; ++jj) kv[jj] = *reinterpret_cast<const float4*>(sK + (tx + 16 * jj) * kQS + d);
#pragma unroll
        for (int i = 0; i < kR; ++i) {
          const float4 qv = *reinterpret_cast<const float4*>(sQ + (ty + 16 * i) * kQS + d);
#pragma unroll
          for (int jj = 0; jj < kK; ++jj) {
            sc[i][jj] = fmaf(qv.x, kv[jj].x, sc[i][jj]);
            sc[i][jj] = fmaf(qv.y, kv[jj].y, sc[i][jj]);
            sc[i][jj] = fmaf(qv.z, kv[jj].z, sc[i][jj]);
            sc[i][jj] = fmaf(qv.w, kv[jj].w, sc[i][jj]);
          }
        }
      }
      __syncthreads();  // every thread is done with sK: refill it with the next tile
      if (n0 + kBN < ke)
        f32_load_tile<kBN, kD, kThreads>(sK, kQS, k_head + (n0 + kBN) * p.k_strides.row, p.k_strides.row,
                                         valid_keys(n0 + kBN), hd, tid, vec);
      __pipeline_commit();

      // Mask and shape only where some row does not see the whole tile or
      // shaping is on; hidden scores become -inf.
      const bool full = n0 >= full_lo && n0 + kBN <= full_hi;
      if (shaped || !full) {
#pragma unroll
        for (int i = 0; i < kR; ++i) {
          const int r = ty + 16 * i;
          const std::int64_t qi = m0 + r;
          const bool row_ok = r < rows;
          const std::int64_t rb = mask.key_begin(qi), re = mask.key_end(qi);
#pragma unroll
          for (int jj = 0; jj < kK; ++jj) {
            const std::int64_t j = n0 + tx + 16 * jj;
            float x = sc[i][jj];
            const bool vis = row_ok && j >= rb && j < re;
            if (shaped && vis) {
              x = apply_softcap<float>(x * p.scale, p.softcap);
              if (p.bias != nullptr) x += load_bias(p, bias_offset(p, b, h, qi, j));
              if (p.alibi != nullptr) x -= slope * float(mask.distance(qi, j));
              x *= kLog2eF;
            }
            sc[i][jj] = vis ? x : -INFINITY;
          }
        }
      }

      // Online softmax per row: the row's 64 scores are in this half-warp.
#pragma unroll
      for (int i = 0; i < kR; ++i) {
        float mx = sc[i][0];
#pragma unroll
        for (int jj = 1; jj < kK; ++jj) mx = fmaxf(mx, sc[i][jj]);
#pragma unroll
        for (int off = 1; off < 16; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float m_new = fmaxf(m_run[i], mx * c_log2);
        // A row that has seen only -inf keeps base 0 so exp2 gives 0, not NaN.
        const float base = m_new == -INFINITY ? 0.0f : m_new;
        const float alpha = exp2f(m_run[i] - base);
        m_run[i] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int jj = 0; jj < kK; ++jj) {
          const float pv = exp2f(fmaf(sc[i][jj], c_log2, -base));
          sum += pv;
          sP[(ty + 16 * i) * kPS + tx + 16 * jj] = pv;
        }
        l_run[i] = l_run[i] * alpha + sum;
#pragma unroll
        for (int cc = 0; cc < kCC; ++cc)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[i][cc][e] *= alpha;
      }
      __pipeline_wait_prior(1);  // V(n0) landed (K of the next tile may still fly)
      __syncthreads();           // P and V visible to every thread

      // O += P V over 4 keys per step.
#pragma unroll 2
      for (int j = 0; j < kBN; j += 4) {
        float4 pr[kR];
#pragma unroll
        for (int i = 0; i < kR; ++i) pr[i] = *reinterpret_cast<const float4*>(sP + (ty + 16 * i) * kPS + j);
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
#pragma unroll
          for (int cc = 0; cc < kCC; ++cc) {
            const float4 vv = *reinterpret_cast<const float4*>(sV + (j + jj) * kVS + tx * 4 + 64 * cc);
#pragma unroll
            for (int i = 0; i < kR; ++i) {
              const float pj = jj == 0 ? pr[i].x : jj == 1 ? pr[i].y : jj == 2 ? pr[i].z : pr[i].w;
              o[i][cc][0] = fmaf(pj, vv.x, o[i][cc][0]);
              o[i][cc][1] = fmaf(pj, vv.y, o[i][cc][1]);
              o[i][cc][2] = fmaf(pj, vv.z, o[i][cc][2]);
              o[i][cc][3] = fmaf(pj, vv.w, o[i][cc][3]);
            }
          }
        }
      }
    }
    __pipeline_wait_prior(0);

    // Epilogue: the row sums over the half-warp, O / l, lse.
#pragma unroll
    for (int i = 0; i < kR; ++i) {
      float l = l_run[i];
#pragma unroll
      for (int off = 1; off < 16; off *= 2) l += __shfl_xor_sync(0xffffffffu, l, off);
      const int r = ty + 16 * i;
      if (r >= rows) continue;
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      float* orow = og + operand_offset(p.out_strides, b, s.q_row0, m0 + r, h);
#pragma unroll
      for (int cc = 0; cc < kCC; ++cc)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = tx * 4 + 64 * cc + e;
          if (c < hd) orow[c] = o[i][cc][e] * inv;
        }
      if (tx == 0)
        p.lse[lse_offset(p, b, s.q_row0, m0 + r, h)] =
            l > 0.0f ? (m_run[i] + log2f(l)) * 0.6931471805599453f : -INFINITY;
    }
  }
}

}  // namespace flashattn::detail::cuda::portable
