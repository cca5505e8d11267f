// Online softmax over the wgmma accumulator layout: each thread holds two rows
// (h = 0, 1) of its warp's 16, and for each 8-column block j the columns
// 8j + 2*(lane%4) + {0,1}; a row is spread over the 4 lanes of a quad.
#pragma once
#include <cmath>
#include <cstdint>

#include "cuda/sm90/ptx.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::sm90 {

struct SoftmaxParams {
  float exp2_scale;  // multiplies a (capped) score into log2 units; > 0
  float cap_pre;     // scale / softcap when softcap is on
  float softcap;     // 0: off
  // Lazy rescaling: a row keeps its running max while the block's max exceeds it
  // by at most this much (log2 units), so its probabilities stay <= 2^slack and O
  // and l need no rescale. 0 rescales on every increase (still skipping the
  // multiply when no row of the warp changed).
  float rescale_slack;
};

// kLazy: lazy rescaling (SoftmaxParams::rescale_slack). Without it a row always
// takes the new max (the v1..v6 rule; corr = 1 only when the max did not move).
template <int BN, bool kLazy>
struct OnlineSoftmax {
  static constexpr int kRegs = BN / 2;
  float m[2];  // running max of the (capped) raw scores, per row
  float l[2];  // this thread's partial sum of exp, per row (quad-reduced at the end)

  __device__ __forceinline__ void reset() {
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
  }

  // Turns the scores of key block starting at column j0 into probabilities (in
  // place) and returns the factor each row's output must be rescaled by (exactly
  // 1 when the row kept its max). kb/ke: per row visible key range, used when `masked`.
  // The max is subtracted in log2 units, so a kept max that is up to `slack` below
  // the true one only scales the row's P, l and O by the same 2^k <= 2^slack; the
  // final O / l and the lse (from the max actually used) are unchanged.
  __device__ __forceinline__ void step(float (&s)[kRegs], const SoftmaxParams& sp, bool masked, int j0,
                                       const int (&kb)[2], const int (&ke)[2], float (&corr)[2]) {
    const int lane = threadIdx.x % 32;
    if (sp.softcap > 0.0f) {
#pragma unroll
      for (int i = 0; i < kRegs; ++i) s[i] = sp.softcap * tanhf(s[i] * sp.cap_pre);
    }
    if (masked) {
#pragma unroll
      for (int i = 0; i < kRegs; ++i) {
        const int h = (i >> 1) & 1;
        const int col = j0 + 8 * (i >> 2) + 2 * (lane % 4) + (i & 1);
        if (col < kb[h] || col >= ke[h]) s[i] = -INFINITY;
      }
    }
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int i = 0; i < kRegs; ++i) mx[(i >> 1) & 1] = fmaxf(mx[(i >> 1) & 1], s[i]);
    float ms[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      // Keep the old max (no rescale) unless it is -inf or the new one is more than
      // the slack above it.
      if (kLazy && m[h] != -INFINITY && (mx[h] - m[h]) * sp.exp2_scale <= sp.rescale_slack) {
        ms[h] = m[h] * sp.exp2_scale;
        corr[h] = 1.0f;
      } else {
        // A row with nothing visible yet keeps max -inf: subtract 0 so exp2 gives 0, not NaN.
        ms[h] = mx[h] == -INFINITY ? 0.0f : mx[h] * sp.exp2_scale;
        corr[h] = ex2_approx(m[h] * sp.exp2_scale - ms[h]);
        m[h] = mx[h];
        l[h] *= corr[h];
      }
    }
#pragma unroll
    for (int i = 0; i < kRegs; ++i) {
      const int h = (i >> 1) & 1;
      s[i] = ex2_approx(fmaf(s[i], sp.exp2_scale, -ms[h]));
      l[h] += s[i];
    }
  }

  // Final normalizers: 1/sum per row (0 for an empty row) and the natural-log lse.
  __device__ __forceinline__ void finish(const SoftmaxParams& sp, float (&inv)[2], float (&lse)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const bool empty = !(sum > 0.0f);
      inv[h] = empty ? 0.0f : 1.0f / sum;
      lse[h] = empty ? -INFINITY : (m[h] * sp.exp2_scale + log2f(sum)) * 0.6931471805599453f;
    }
  }
};

// Packs two floats into the 16-bit pair of an A-operand register.
template <typename T>
__device__ __forceinline__ std::uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<std::uint32_t*>(&v);
}
template <>
__device__ __forceinline__ std::uint32_t pack2<__half>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<std::uint32_t*>(&v);
}

// Probabilities of k-step ks (keys 16ks..16ks+15) as the 4 A registers of an
// m64nNk16 wgmma: the accumulator layout of two 8-column blocks is exactly the
// register-A layout, so this is a conversion, not a shuffle.
template <typename T, int NR>
__device__ __forceinline__ void p_fragment(const float (&s)[NR], int ks, std::uint32_t (&a)[4]) {
  const int j = 8 * ks;  // register index of column block 2ks
  a[0] = pack2<T>(s[j + 0], s[j + 1]);
  a[1] = pack2<T>(s[j + 2], s[j + 3]);
  a[2] = pack2<T>(s[j + 4], s[j + 5]);
  a[3] = pack2<T>(s[j + 6], s[j + 7]);
}

}  // namespace flashattn::detail::cuda::sm90
