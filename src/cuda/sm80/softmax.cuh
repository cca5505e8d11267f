// Score shaping, masking and the online softmax on mma accumulator fragments.
//
// A warp owns 16 query rows; lane l holds rows l/4 and l/4 + 8 ("half" 0 and 1)
// and, in each 8-key column tile nt of the score tile, keys 2*(l%4) + {0,1}.
// Fragment S[nt][2*half + e] is (row half, key e) of tile nt.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "mask.hpp"

namespace flashattn::detail::cuda::sm80 {

inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// What one thread needs to shape and mask its two rows.
struct RowInfo {
  int i[2];      // in-sequence query rows (sm80_unsupported keeps lengths < 2^31 - 256)
  int begin[2];  // visible keys [begin, end)
  int end[2];
};

// Scores in log2 units (scale * log2(e) folded in) with no masking: the fast
// path for key tiles every row fully sees and no bias/ALiBi/softcap.
template <int kN>
__device__ __forceinline__ void scale_scores(float (&S)[kN][4], float scale_log2) {
#pragma unroll
  for (int nt = 0; nt < kN; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) S[nt][e] *= scale_log2;
}

// The general path: softcap, bias, ALiBi (runtime flags) and the visibility
// mask; masked scores become -inf. `n0` is the tile's first key.
template <int kN>
__device__ __forceinline__ void shape_scores(float (&S)[kN][4], const ForwardParams& p, int diag,
                                             const RowInfo& rows, int b, int h, float slope, int n0,
                                             int lane) {
  const bool shaped = p.softcap > 0.0f || p.bias != nullptr || p.alibi != nullptr;
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int half = e >> 1;
      const int j = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
      const int i = rows.i[half];
      float x = S[nt][e] * p.scale;
      if (shaped) {
        x = apply_softcap<float>(x, p.softcap);
        if (p.bias != nullptr && j < rows.end[half] && j >= rows.begin[half])
          x += load_bias(p, bias_offset(p, b, h, i, j));
        if (p.alibi != nullptr) x -= slope * fabsf(float(i + diag - j));
      }
      S[nt][e] = (j >= rows.begin[half] && j < rows.end[half]) ? x * kLog2e : -INFINITY;
    }
  }
}

// Running max (log2 units) and this lane's share of the running sum, per row.
struct SoftmaxState {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};

  // Turns S (log2-unit scores) into probabilities relative to the new running
  // max and rescales the output accumulators O[dt][4].
  template <int kN, int kDT>
  __device__ __forceinline__ void update(float (&S)[kN][4], float (&O)[kDT][4]) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) mx = fmaxf(mx, fmaxf(S[nt][2 * half], S[nt][2 * half + 1]));
      // The four lanes of a row hold its 8-key slices.
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[half], mx);
      // Rows that have seen only -inf keep base 0: exp2 then gives 0, not NaN.
      const float base = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m[half] - base);
      m[half] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) {
        S[nt][2 * half] = exp2f(S[nt][2 * half] - base);
        S[nt][2 * half + 1] = exp2f(S[nt][2 * half + 1] - base);
        sum += S[nt][2 * half] + S[nt][2 * half + 1];
      }
      l[half] = l[half] * alpha + sum;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        O[dt][2 * half] *= alpha;
        O[dt][2 * half + 1] *= alpha;
      }
    }
  }

  // Sums the row shares over the row's four lanes.
  __device__ __forceinline__ void finish() {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      l[half] += __shfl_xor_sync(0xffffffffu, l[half], 1);
      l[half] += __shfl_xor_sync(0xffffffffu, l[half], 2);
    }
  }
  // Natural-log logsumexp; -inf for a row with no visible key.
  __device__ __forceinline__ float lse(int half) const {
    return l[half] > 0.0f ? (m[half] + log2f(l[half])) * kLn2 : -INFINITY;
  }
  __device__ __forceinline__ float inv_sum(int half) const { return l[half] > 0.0f ? 1.0f / l[half] : 0.0f; }
};

}  // namespace flashattn::detail::cuda::sm80
