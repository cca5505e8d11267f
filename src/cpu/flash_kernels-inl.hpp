// Per-target SIMD kernels of the CPU FlashAttention-2 backend (Highway). This
// header is re-included once per target by the translation units that use
// foreach_target.h; the guard below toggles with each pass, as Highway requires.
#if defined(FLASHATTN_CPU_FLASH_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef FLASHATTN_CPU_FLASH_KERNELS_INL_H_
#undef FLASHATTN_CPU_FLASH_KERNELS_INL_H_
#else
#define FLASHATTN_CPU_FLASH_KERNELS_INL_H_
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "flashattn/tensor.hpp"
#include "half.hpp"
#include "params.hpp"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace flashattn::detail::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Register blocking of the GEMM micro-kernel: kMR rows x kNV vectors of
// accumulators, plus kNV vectors of B and one broadcast of A, must fit in the
// register file (32 zmm on AVX-512: 24 + 4 + 1; 16 ymm/xmm elsewhere: 12 + 2 + 1).
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#ifdef FLASHATTN_CPU_MR512  // tuning experiments only
inline constexpr std::size_t kMR = FLASHATTN_CPU_MR512;
inline constexpr std::size_t kNV = FLASHATTN_CPU_NV512;
#else
inline constexpr std::size_t kMR = 6;  // 6 x 4: 24 + 4 + 1 registers; measured over 12 x 2 in docs/perf/cpu.md
inline constexpr std::size_t kNV = 4;
#endif
#elif HWY_TARGET == HWY_EMU128 || HWY_TARGET == HWY_SCALAR
inline constexpr std::size_t kMR = 4;
inline constexpr std::size_t kNV = 2;
#else
inline constexpr std::size_t kMR = 6;
inline constexpr std::size_t kNV = 2;
#endif

// C[MR x NV*L] (+)= sum_k A(r, k) * B[k*ldb + n], where A(r, k) = A[r*ars + k*acs].
// A's elements are broadcast one at a time, so A may have any strides: the same
// kernel multiplies by P and by P^T without a transpose.
template <std::size_t MR, std::size_t NV>
HWY_INLINE void MicroKernel(std::size_t K, const float* HWY_RESTRICT A, std::ptrdiff_t ars,
                            std::ptrdiff_t acs, const float* HWY_RESTRICT B, std::size_t ldb,
                            float* HWY_RESTRICT C, std::size_t ldc, bool accumulate) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  VF acc[MR][NV];
#pragma GCC unroll 16
  for (std::size_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[r][v] = hn::Zero(df);
  for (std::size_t k = 0; k < K; ++k) {
    VF b[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) b[v] = hn::LoadU(df, B + k * ldb + v * L);
    const float* a = A + std::ptrdiff_t(k) * acs;
#pragma GCC unroll 16
    for (std::size_t r = 0; r < MR; ++r) {
      const VF ar = hn::Set(df, a[std::ptrdiff_t(r) * ars]);
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(ar, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) {
      float* c = C + r * ldc + v * L;
      hn::StoreU(accumulate ? hn::Add(hn::LoadU(df, c), acc[r][v]) : acc[r][v], df, c);
    }
}

// C (M x N, row stride ldc) (+)= A (M x K, strides ars/acs) * B (K x N, row stride
// ldb). N must be a multiple of the lane count. Column strips of B (K x NV*L)
// are the outer loop so that each strip stays in L1 while A streams past it.
inline void Gemm(std::size_t M, std::size_t N, std::size_t K, const float* A, std::ptrdiff_t ars,
                 std::ptrdiff_t acs, const float* B, std::size_t ldb, float* C, std::size_t ldc,
                 bool accumulate) {
  const std::size_t L = hn::Lanes(DF());
#ifdef FLASHATTN_CPU_M_OUTER  // tuning experiment: row panels outer
  std::size_t m = 0;
  for (; m + kMR <= M; m += kMR) {
    std::size_t n = 0;
    for (; n + kNV * L <= N; n += kNV * L)
      MicroKernel<kMR, kNV>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n,
                            ldc, accumulate);
    for (; n < N; n += L)
      MicroKernel<kMR, 1>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                          accumulate);
  }
  for (; m < M; ++m) {
    std::size_t n = 0;
    for (; n + kNV * L <= N; n += kNV * L)
      MicroKernel<1, kNV>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                          accumulate);
    for (; n < N; n += L)
      MicroKernel<1, 1>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                        accumulate);
  }
  return;
#endif
  std::size_t n = 0;
  for (; n + kNV * L <= N; n += kNV * L) {
    std::size_t m = 0;
    for (; m + kMR <= M; m += kMR)
      MicroKernel<kMR, kNV>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n,
                            ldc, accumulate);
    for (; m < M; ++m)
      MicroKernel<1, kNV>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                          accumulate);
  }
  for (; n < N; n += L) {
    std::size_t m = 0;
    for (; m + kMR <= M; m += kMR)
      MicroKernel<kMR, 1>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                          accumulate);
    for (; m < M; ++m)
      MicroKernel<1, 1>(K, A + std::ptrdiff_t(m) * ars, ars, acs, B + n, ldb, C + m * ldc + n, ldc,
                        accumulate);
  }
}

// n elements of a float/half/bfloat16 buffer (starting at element off) as fp32.
inline void LoadRowF32(const void* base, DType t, std::int64_t off, std::size_t n, float* dst) {
  if (t == DType::f32) {
    std::memcpy(dst, static_cast<const float*>(base) + off, n * sizeof(float));
    return;
  }
  const DF df;
  const std::size_t L = hn::Lanes(df);
  std::size_t c = 0;
  if (t == DType::bf16) {
    const hn::Rebind<hwy::bfloat16_t, DF> dh;
    const auto* src = static_cast<const hwy::bfloat16_t*>(base) + off;
    for (; c + L <= n; c += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, src + c)), df, dst + c);
    for (; c < n; ++c) dst[c] = bf16_to_float(static_cast<const std::uint16_t*>(base)[off + c]);
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto* src = static_cast<const hwy::float16_t*>(base) + off;
    for (; c + L <= n; c += L) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, src + c)), df, dst + c);
    for (; c < n; ++c) dst[c] = fp16_to_float(static_cast<const std::uint16_t*>(base)[off + c]);
  }
}

// dst[0, n) = 0 (n a multiple of nothing in particular).
inline void ZeroRow(float* dst, std::size_t n) { std::memset(dst, 0, n * sizeof(float)); }

// x[c] *= s for c < n, n a multiple of the lane count.
inline void ScaleRow(float* x, std::size_t n, float s) {
  const DF df;
  const VF vs = hn::Set(df, s);
  for (std::size_t c = 0; c < n; c += hn::Lanes(df)) hn::StoreU(hn::Mul(hn::LoadU(df, x + c), vs), df, x + c);
}

// x[c] = softcap * tanh(x[c] * pre / softcap) for c < n (multiple of the lanes),
// where pre is the softmax scale: the capped score of the public semantics.
inline void SoftcapRow(float* x, std::size_t n, float pre, float softcap) {
  const DF df;
  const VF vin = hn::Set(df, pre / softcap), vout = hn::Set(df, softcap);
  for (std::size_t c = 0; c < n; c += hn::Lanes(df))
    hn::StoreU(hn::Mul(vout, hn::Tanh(df, hn::Mul(hn::LoadU(df, x + c), vin))), df, x + c);
}

// x[c] += bias[c] for c < n (the bias row already converted to fp32).
inline void AddRow(float* x, const float* y, std::size_t n) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  std::size_t c = 0;
  for (; c + L <= n; c += L) hn::StoreU(hn::Add(hn::LoadU(df, x + c), hn::LoadU(df, y + c)), df, x + c);
  for (; c < n; ++c) x[c] += y[c];
}

// x[c] -= slope * |d0 - c| for c < n (multiple of the lanes): ALiBi along one
// row, d0 being the row's aligned diagonal minus the tile's first key.
inline void AlibiRow(float* x, std::size_t n, float slope, std::int64_t d0) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  const VF vs = hn::Set(df, slope);
  const VF iota = hn::Iota(df, 0.0f);
  // Distances are exact in fp32 up to 2^24; beyond that the reference rounds too.
  for (std::size_t c = 0; c < n; c += L) {
    const VF dist = hn::Abs(hn::Sub(hn::Set(df, float(d0 - std::int64_t(c))), iota));
    hn::StoreU(hn::NegMulAdd(vs, dist, hn::LoadU(df, x + c)), df, x + c);
  }
}

// max over x[0, n) (multiple of the lanes).
inline float MaxRow(const float* x, std::size_t n) {
  const DF df;
  VF m = hn::Set(df, -std::numeric_limits<float>::infinity());
  for (std::size_t c = 0; c < n; c += hn::Lanes(df)) m = hn::Max(m, hn::LoadU(df, x + c));
  return hn::GetLane(hn::MaxOfLanes(df, m));
}

// exp(x) for the softmax, where x <= 0 up to rounding: 2^n * p(f) with n the
// nearest integer to x*log2(e), f in [-0.5, 0.5] and p the degree-6 Taylor
// polynomial of 2^f (truncation 1e-7 relative, under one fp32 ulp). Arguments
// below -87 (and -inf, masked keys) give exactly 0. About 16 instructions, a quarter fewer than hwy::Exp, which guards a wider range.
HWY_INLINE VF SoftmaxExp(DF df, VF x) {
#ifdef FLASHATTN_CPU_HWY_EXP  // tuning experiment: Highway's Exp
  return hn::Exp(df, x);
#else
  const hn::RebindToSigned<DF> di;
  // Clamped to [-127, 127] so that n fits the exponent field (a saved lse that
  // does not match the inputs can push x above 0 in the backward).
  const VF t = hn::Min(hn::Max(hn::Mul(x, hn::Set(df, 1.44269504088896341f)), hn::Set(df, -127.0f)),
                       hn::Set(df, 127.0f));
  const VF n = hn::Round(t);
  const VF f = hn::Sub(t, n);
  VF p = hn::Set(df, 1.5403530393381609e-4f);
  p = hn::MulAdd(p, f, hn::Set(df, 1.3333558146428443e-3f));
  p = hn::MulAdd(p, f, hn::Set(df, 9.6181291076284772e-3f));
  p = hn::MulAdd(p, f, hn::Set(df, 5.5504108664821580e-2f));
  p = hn::MulAdd(p, f, hn::Set(df, 2.4022650695910071e-1f));
  p = hn::MulAdd(p, f, hn::Set(df, 6.9314718055994531e-1f));
  p = hn::MulAdd(p, f, hn::Set(df, 1.0f));
  const auto scaled = hn::Add(hn::BitCast(di, p), hn::ShiftLeft<23>(hn::ConvertTo(di, n)));
  return hn::IfThenZeroElse(hn::Lt(t, hn::Set(df, -126.0f)), hn::BitCast(df, scaled));
#endif
}

// x[c] = exp(x[c] - sub) for c < n (multiple of the lanes); returns the sum.
// -inf entries (masked keys) give exactly 0.
inline float ExpRow(float* x, std::size_t n, float sub) {
  const DF df;
  const VF vsub = hn::Set(df, sub);
  VF sum = hn::Zero(df);
  for (std::size_t c = 0; c < n; c += hn::Lanes(df)) {
    const VF e = SoftmaxExp(df, hn::Sub(hn::LoadU(df, x + c), vsub));
    sum = hn::Add(sum, e);
    hn::StoreU(e, df, x + c);
  }
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

// x[c] = exp(x[c] * scale - sub) for c < n (multiple of the lanes): the scale
// folded into the exponent saves a pass; returns the sum. -inf entries give 0.
inline float ExpScaledRow(float* x, std::size_t n, float scale, float sub) {
  const DF df;
  const VF vs = hn::Set(df, scale), vsub = hn::Set(df, sub);
  VF sum = hn::Zero(df);
  for (std::size_t c = 0; c < n; c += hn::Lanes(df)) {
    const VF e = SoftmaxExp(df, hn::MulSub(hn::LoadU(df, x + c), vs, vsub));
    sum = hn::Add(sum, e);
    hn::StoreU(e, df, x + c);
  }
  return hn::GetLane(hn::SumOfLanes(df, sum));
}

// x[c] = exp(x[c]) for c < n (multiple of the lanes), x <= 0 up to rounding.
inline void ExpInPlace(float* x, std::size_t n) {
  const DF df;
  for (std::size_t c = 0; c < n; c += hn::Lanes(df)) hn::StoreU(SoftmaxExp(df, hn::LoadU(df, x + c)), df, x + c);
}

// sum of a[c] * b[c] for c < n (any n).
inline float DotRow(const float* a, const float* b, std::size_t n) {
  const DF df;
  const std::size_t L = hn::Lanes(df);
  VF acc = hn::Zero(df);
  std::size_t c = 0;
  for (; c + L <= n; c += L) acc = hn::MulAdd(hn::LoadU(df, a + c), hn::LoadU(df, b + c), acc);
  float s = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

// Rows [j0, j0 + cols) of head hk of one sequence's K (or V), converted to fp32
// and transposed into dst[d * ld + c] (D x ld; columns cols..ld zeroed): the B
// operand of S = Q K^T. tmp holds 16 * D floats.
inline void PackTransposed(const void* base, DType t, const OperandStrides& st, int b,
                           std::int64_t row0, std::int64_t j0, std::int64_t cols, int hk,
                           std::size_t D, std::size_t ld, float* HWY_RESTRICT dst,
                           float* HWY_RESTRICT tmp) {
  constexpr std::int64_t kRows = 16;  // rows converted together, then written 16 wide
  for (std::int64_t c0 = 0; c0 < cols; c0 += kRows) {
    const std::int64_t n = cols - c0 < kRows ? cols - c0 : kRows;
    for (std::int64_t c = 0; c < n; ++c)
      LoadRowF32(base, t, operand_offset(st, b, row0, j0 + c0 + c, hk), D, tmp + c * D);
    for (std::size_t d = 0; d < D; ++d) {
      float* out = dst + d * ld + c0;
      for (std::int64_t c = 0; c < n; ++c) out[c] = tmp[c * D + d];
    }
  }
  for (std::size_t d = 0; d < D; ++d)
    for (std::size_t c = std::size_t(cols); c < ld; ++c) dst[d * ld + c] = 0.0f;
}

// The same rows converted to fp32 row-major: dst[c * Dp + d] (rows cols..nrows
// and columns D..Dp zeroed): the B operand of O += P V and dQ += dS K.
inline void PackRows(const void* base, DType t, const OperandStrides& st, int b, std::int64_t row0,
                     std::int64_t j0, std::int64_t cols, int hk, std::size_t D, std::size_t Dp,
                     std::size_t nrows, float* HWY_RESTRICT dst) {
  for (std::int64_t c = 0; c < cols; ++c) {
    LoadRowF32(base, t, operand_offset(st, b, row0, j0 + c, hk), D, dst + c * Dp);
    ZeroRow(dst + c * Dp + D, Dp - D);
  }
  ZeroRow(dst + cols * Dp, (nrows - std::size_t(cols)) * Dp);
}

}  // namespace flashattn::detail::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
