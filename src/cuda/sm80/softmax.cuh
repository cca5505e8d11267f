// Score shaping, masking and the online softmax on mma accumulator fragments.
//
// A warp owns 16 query rows; lane l holds rows l/4 and l/4 + 8 ("half" 0 and 1)
// and, in each 8-key column tile nt of the score tile, keys 2*(l%4) + {0,1}.
// Fragment S[nt][2*half + e] is (row half, key e) of tile nt.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/sm80/ptx.cuh"
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

// Masks (and, when kShaped, shapes) one 16-row score tile in place; `n0` is
// the tile's first key. Without shaping, scores stay raw dot products (the
// softmax folds the scale in: c = scale*log2(e)) and masked ones become -inf.
// With shaping (softcap, bias, ALiBi; runtime values) they come out in log2
// units (c = 1). Shaping is a compile-time choice: its per-element loads and
// tanh would otherwise hold registers in every kernel (v2 spilled).
template <bool kShaped, int kN>
__device__ __forceinline__ void mask_scores(float (&S)[kN][4], const ForwardParams& p, int diag,
                                            const RowInfo& rows, int b, int h, float slope, int n0, int lane) {
  std::int64_t bias_row[2] = {0, 0};
  if (kShaped && p.bias != nullptr) {
    bias_row[0] = bias_offset(p, b, h, rows.i[0], 0);
    bias_row[1] = bias_offset(p, b, h, rows.i[1], 0);
  }
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int half = e >> 1;
      const int j = n0 + nt * 8 + (lane & 3) * 2 + (e & 1);
      const bool visible = j >= rows.begin[half] && j < rows.end[half];
      float x = S[nt][e];
      if constexpr (kShaped) {
        const int i = rows.i[half];
        x = apply_softcap<float>(x * p.scale, p.softcap);
        if (p.bias != nullptr && visible) x += load_bias(p, bias_row[half] + j);
        if (p.alibi != nullptr) x -= slope * fabsf(float(i + diag - j));
        x *= kLog2e;
      }
      S[nt][e] = visible ? x : -INFINITY;
    }
  }
}

// Running max (log2 units) and this lane's share of the running sum, per row.
struct SoftmaxState {
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.0f, 0.0f};

  // Turns S into probabilities relative to the new running max and rescales
  // the output accumulators O[dt][4]. The scores in log2 units are S * c with
  // c > 0: the fast path passes raw dot products and c = scale*log2(e), so the
  // scale folds into one FFMA per element; shaped scores arrive with c = 1.
  template <int kN, int kDT>
  __device__ __forceinline__ void update(float (&S)[kN][4], float (&O)[kDT][4], float c) {
    static_assert((kN & (kN - 1)) == 0, "key tiles are powers of two");
    float alpha[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // Max and sum as trees: the dependency chain is log2(kN) deep instead
      // of kN (two warps per scheduler leave little else to hide it).
      float t[kN];
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) t[nt] = fmaxf(S[nt][2 * half], S[nt][2 * half + 1]);
#pragma unroll
      for (int w = kN / 2; w > 0; w /= 2)
#pragma unroll
        for (int i = 0; i < w; ++i) t[i] = fmaxf(t[i], t[i + w]);
      float mx = t[0];
      // The four lanes of a row hold its 8-key slices.
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[half], mx * c);
      // Rows that have seen only -inf keep base 0: exp2 then gives 0, not NaN.
      const float base = m_new == -INFINITY ? 0.0f : m_new;
      alpha[half] = fast_exp2(m[half] - base);
      m[half] = m_new;
#pragma unroll
      for (int nt = 0; nt < kN; ++nt) {
        S[nt][2 * half] = fast_exp2(fmaf(S[nt][2 * half], c, -base));
        S[nt][2 * half + 1] = fast_exp2(fmaf(S[nt][2 * half + 1], c, -base));
        t[nt] = S[nt][2 * half] + S[nt][2 * half + 1];
      }
#pragma unroll
      for (int w = kN / 2; w > 0; w /= 2)
#pragma unroll
        for (int i = 0; i < w; ++i) t[i] += t[i + w];
      l[half] = l[half] * alpha[half] + t[0];
    }
    // Once the running max settles, most tiles leave it unchanged: the warp
    // skips the D/2 multiplies of the rescale unless some row's max moved.
    if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        O[dt][0] *= alpha[0];
        O[dt][1] *= alpha[0];
        O[dt][2] *= alpha[1];
        O[dt][3] *= alpha[1];
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
