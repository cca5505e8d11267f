// The portable SIMT forward kernel: fp32 accumulation, one code path for
// fp32/fp16/bf16 and every head dim 1..256, element-wise loads (any alignment,
// any stride). It is the correctness baseline and the fp32 path.
//
// A block owns kBM query rows of one (batch, head); each row is owned by a group
// of kG = kThreads / kBM consecutive lanes. A thread computes kBN/kG scores of
// its row per key tile and owns kD/kG output columns (c = lane_in_group + kG*u).
// K/V tiles are staged in shared memory as fp32.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::portable {

inline constexpr int kThreads = 128;

// Tile shapes per head-dim bucket: a thread's register tile stays at <= 32
// accumulators and <= 32 scores, and shared memory fits sm_75's 64 KB opt-in.
template <int kD> struct Config;
template <> struct Config<32> { static constexpr int kBM = 64, kBN = 64; };
template <> struct Config<64> { static constexpr int kBM = 64, kBN = 32; };
template <> struct Config<128> { static constexpr int kBM = 32, kBN = 32; };
template <> struct Config<256> { static constexpr int kBM = 16, kBN = 16; };

// Shared memory: Q and K rows padded by one float (lanes of a warp read
// different rows at the same column), V unpadded (lanes read one row).
template <int kD>
constexpr std::size_t smem_bytes() {
  return (std::size_t(Config<kD>::kBM + Config<kD>::kBN) * (kD + 1) + std::size_t(Config<kD>::kBN) * kD) *
         sizeof(float);
}

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

template <typename T, int kD>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const ForwardParams p, std::int64_t num_tiles, std::int64_t total_work) {
  constexpr int kBM = Config<kD>::kBM;
  constexpr int kBN = Config<kD>::kBN;
  constexpr int kG = kThreads / kBM;  // lanes per query row
  constexpr int kS = kBN / kG;        // scores per thread per tile
  constexpr int kU = kD / kG;         // output columns per thread
  constexpr int kQS = kD + 1;         // padded row stride of sQ/sK
  static_assert(kG >= 1 && kG <= 32 && (32 % kG) == 0, "a row's lanes must sit in one warp");

  extern __shared__ float smem[];
  float* sQ = smem;
  float* sK = sQ + kBM * kQS;
  float* sV = sK + kBN * kQS;

  const int tid = threadIdx.x;
  const int r_local = tid / kG;
  const int gl = tid % kG;
  const int hd = p.head_dim;
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* out = static_cast<T*>(p.out);

  for (std::int64_t work = blockIdx.x; work < total_work; work += gridDim.x) {
    // Tiles of one (batch, head) are adjacent so they share K/V in L2; the last
    // tile (the most keys under a causal mask) of each head starts first.
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

    __syncthreads();  // the previous work item is done with shared memory
    for (int idx = tid; idx < kBM * hd; idx += kThreads) {
      const int r = idx / hd, c = idx - r * hd;
      sQ[r * kQS + c] = r < rows ? to_float(q[operand_offset(p.q_strides, b, s.q_row0, m0 + r, h) + c]) : 0.0f;
    }

    const std::int64_t i = m0 + r_local;  // this thread's query row (in-sequence)
    const bool row_ok = r_local < rows;
    const std::int64_t rb = mask.key_begin(i), re = mask.key_end(i);
    const float slope = alibi_slope(p, b, h);
    // Keys any row of this block can see: begin and end grow with the row.
    const std::int64_t kb = mask.key_begin(m0);
    const std::int64_t ke = mask.key_end(m0 + rows - 1);

    float m_run = -INFINITY;  // running max, log2 units
    float l_run = 0.0f;       // this thread's share of the running sum
    float acc[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) acc[u] = 0.0f;

    for (std::int64_t n0 = kb; n0 < ke; n0 += kBN) {
      __syncthreads();  // readers of the previous K/V tile are done
      for (int idx = tid; idx < kBN * hd; idx += kThreads) {
        const int r = idx / hd, c = idx - r * hd;
        const std::int64_t j = n0 + r;
        float kv_k = 0.0f, kv_v = 0.0f;
        if (j < s.len_k) {
          kv_k = to_float(k[operand_offset(p.k_strides, b, s.k_row0, j, hk) + c]);
          kv_v = to_float(v[operand_offset(p.v_strides, b, s.k_row0, j, hk) + c]);
        }
        sK[r * kQS + c] = kv_k;
        sV[r * kD + c] = kv_v;
      }
      __syncthreads();

      float x[kS];
      float m_tile = -INFINITY;
#pragma unroll
      for (int t = 0; t < kS; ++t) {
        const int jl = gl + kG * t;
        const std::int64_t j = n0 + jl;
        const float* qr = sQ + r_local * kQS;
        const float* kr = sK + jl * kQS;
        float dot = 0.0f;
#pragma unroll 4
        for (int c = 0; c < hd; ++c) dot = fmaf(qr[c], kr[c], dot);
        float xv = -INFINITY;
        if (row_ok && j >= rb && j < re) {
          xv = apply_softcap<float>(dot * p.scale, p.softcap);
          if (p.bias != nullptr) xv += load_bias(p, bias_offset(p, b, h, i, j));
          if (p.alibi != nullptr) xv -= slope * float(mask.distance(i, j));
          xv *= kLog2e;
        }
        x[t] = xv;
        m_tile = fmaxf(m_tile, xv);
      }
#pragma unroll
      for (int off = kG / 2; off > 0; off /= 2) m_tile = fmaxf(m_tile, __shfl_xor_sync(0xffffffffu, m_tile, off));
      const float m_new = fmaxf(m_run, m_tile);
      // A row that has seen only -inf keeps base 0 so exp2 gives 0, not NaN.
      const float base = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m_run - base);
      m_run = m_new;
      float psum = 0.0f;
#pragma unroll
      for (int t = 0; t < kS; ++t) {
        x[t] = exp2f(x[t] - base);
        psum += x[t];
      }
      l_run = l_run * alpha + psum;
#pragma unroll
      for (int u = 0; u < kU; ++u) acc[u] *= alpha;
      // O += P V: each lane needs every probability of its row; they are
      // broadcast within the row's lane group.
#pragma unroll
      for (int t = 0; t < kS; ++t) {
#pragma unroll
        for (int g2 = 0; g2 < kG; ++g2) {
          const float pj = __shfl_sync(0xffffffffu, x[t], g2, kG);
          const float* vr = sV + (g2 + kG * t) * kD + gl;
#pragma unroll
          for (int u = 0; u < kU; ++u) acc[u] = fmaf(pj, vr[kG * u], acc[u]);
        }
      }
    }

#pragma unroll
    for (int off = kG / 2; off > 0; off /= 2) l_run += __shfl_xor_sync(0xffffffffu, l_run, off);
    if (row_ok) {
      const float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
      const std::int64_t oo = operand_offset(p.out_strides, b, s.q_row0, i, h);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = gl + kG * u;
        if (c < hd) out[oo + c] = from_float<T>(acc[u] * inv);
      }
      if (gl == 0)
        p.lse[lse_offset(p, b, s.q_row0, i, h)] = l_run > 0.0f ? (m_run + log2f(l_run)) * kLn2 : -INFINITY;
    }
  }
}

}  // namespace flashattn::detail::cuda::portable
