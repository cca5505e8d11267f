// avx512_bf16 kernels of the CPU forward (see bf16_dot.hpp). Only the functions
// marked FA_BF16_TARGET use AVX-512 instructions; everything else in this file
// (and every inline function the headers bring in) is compiled for the baseline,
// so the library loads and runs on any x86-64 and reaches these kernels only
// after bf16_dot_enabled() has checked the CPU.
#include "cpu/bf16_dot.hpp"

#include <cstdlib>
#include <cstring>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FA_BF16_AVAILABLE 1
#define FA_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define FA_BF16_AVAILABLE 0
#endif

namespace flashattn::detail::cpu {

Bf16Kernel bf16_kernel() {
  static const Bf16Kernel kern = [] {
    const char* off = std::getenv("FLASHATTN_CPU_NO_BF16");
    if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return Bf16Kernel::none;
    const char* want = std::getenv("FLASHATTN_CPU_BF16");
    const std::string w = want ? want : "";
    if (w == "off") return Bf16Kernel::none;
#if FA_BF16_AVAILABLE
    if (w == "avx512") {
      __builtin_cpu_init();
      // avx512f also means the OS saves the zmm state (GCC checks XGETBV).
      const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
      return ok ? Bf16Kernel::avx512 : Bf16Kernel::none;
    }
    // The AMX path also packs with AVX-512BW (InterleaveRows), which every AMX CPU has.
    if (bf16_amx_usable() && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16"))
      return Bf16Kernel::amx;
#endif
    return Bf16Kernel::none;
  }();
  return kern;
}

void bf16_load_pairs(const void* base, std::int64_t off, std::size_t D, std::size_t kp,
                     std::uint32_t* dst) {
  auto* d16 = reinterpret_cast<std::uint16_t*>(dst);
  std::memcpy(d16, static_cast<const std::uint16_t*>(base) + off, D * 2);
  std::memset(d16 + D, 0, (2 * kp - D) * 2);
}

void bf16_pack_kt(const ForwardParams& p, int b, std::int64_t row0, std::int64_t j0,
                  std::int64_t cols, int hk, std::size_t ld, std::size_t kp, std::uint32_t* dst) {
  const std::size_t D = std::size_t(p.head_dim), Kp = (D + 1) / 2;
  constexpr std::int64_t kRows = 16;  // keys gathered together, then written 16 wide
  std::uint32_t tmp[kRows * 128];     // Kp <= 128 (head_dim <= 256)
  for (std::int64_t c0 = 0; c0 < cols; c0 += kRows) {
    const std::int64_t n = cols - c0 < kRows ? cols - c0 : kRows;
    for (std::int64_t c = 0; c < n; ++c)
      bf16_load_pairs(p.k, operand_offset(p.k_strides, b, row0, j0 + c0 + c, hk), D, Kp,
                      tmp + c * Kp);
    for (std::size_t dp = 0; dp < Kp; ++dp) {
      std::uint32_t* out = dst + dp * ld + std::size_t(c0);
      for (std::int64_t c = 0; c < n; ++c) out[c] = tmp[std::size_t(c) * Kp + dp];
    }
  }
  for (std::size_t dp = 0; dp < Kp; ++dp)
    for (std::size_t c = std::size_t(cols); c < ld; ++c) dst[dp * ld + c] = 0;
  std::memset(dst + Kp * ld, 0, (kp - Kp) * ld * 4);
}

#if FA_BF16_AVAILABLE

namespace {

FA_BF16_TARGET inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }

// C[MR x NV*16] (+)= A B over Kp pairs; A's pairs are broadcast one at a time,
// B's rows loaded 16 pairs per vector. 6 x 4: 24 accumulators + 4 B vectors + 1
// broadcast of the 32 zmm registers, as in the fp32 kernel.
template <int MR, int NV>
FA_BF16_TARGET inline __attribute__((always_inline)) void Micro(
    std::size_t Kp, const std::uint32_t* __restrict A, std::size_t lda,
    const std::uint32_t* __restrict B, std::size_t ldb, float* __restrict C, std::size_t ldc,
    bool accumulate) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::size_t k = 0; k < Kp; ++k) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = as_bh(_mm512_loadu_si512(B + k * ldb + std::size_t(v) * 16));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = as_bh(_mm512_set1_epi32(int(A[std::size_t(r) * lda + k])));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, bv[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* c = C + std::size_t(r) * ldc + std::size_t(v) * 16;
      _mm512_storeu_ps(c, accumulate ? _mm512_add_ps(_mm512_loadu_ps(c), acc[r][v]) : acc[r][v]);
    }
}

constexpr int kMR = 6, kNV = 4;

// Column strips of B outer (each stays in L1 while A's rows stream past), as in
// the fp32 Gemm.
FA_BF16_TARGET void Gemm(std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
                         std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C,
                         std::size_t ldc, bool accumulate) {
  std::size_t n = 0;
  for (; n + kNV * 16 <= N; n += kNV * 16) {
    std::size_t m = 0;
    for (; m + kMR <= M; m += kMR)
      Micro<kMR, kNV>(Kp, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
    for (; m < M; ++m) Micro<1, kNV>(Kp, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
  }
  for (; n < N; n += 16) {
    std::size_t m = 0;
    for (; m + kMR <= M; m += kMR)
      Micro<kMR, 1>(Kp, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
    for (; m < M; ++m) Micro<1, 1>(Kp, A + m * lda, lda, B + n, ldb, C + m * ldc + n, ldc, accumulate);
  }
}

FA_BF16_TARGET void RoundRows(std::size_t rows, std::size_t n, std::size_t nz, const float* src,
                              std::size_t lds, std::uint16_t* dst, std::size_t ldd) {
  for (std::size_t r = 0; r < rows; ++r) {
    std::size_t c = 0;
    for (; c < n; c += 16) {
      const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + r * lds + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * ldd + c), (__m256i)h);
    }
    for (; c < nz; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + r * ldd + c), _mm256_setzero_si256());
  }
}

FA_BF16_TARGET void StoreRow(std::uint16_t* dst, const float* src, std::size_t n) {
  for (std::size_t c = 0; c < n; c += 16) {
    const __mmask16 m = n - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - c)) - 1u);
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + c));
    _mm256_mask_storeu_epi16(dst + c, m, (__m256i)h);
  }
}

// Two key rows (either may be null: zeros) interleaved into pairs over Dp columns.
FA_BF16_TARGET void InterleaveRows(const std::uint16_t* r0, const std::uint16_t* r1, std::size_t D,
                                   std::size_t Dp, std::uint32_t* dst) {
  for (std::size_t d = 0; d < Dp; d += 16) {
    const std::size_t left = d < D ? D - d : 0;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
    const __m256i lo = r0 ? _mm256_maskz_loadu_epi16(m, r0 + d) : _mm256_setzero_si256();
    const __m256i hi = r1 ? _mm256_maskz_loadu_epi16(m, r1 + d) : _mm256_setzero_si256();
    // The maskz forms: GCC 12's plain ones trip -Wmaybe-uninitialized in its own header.
    const __mmask16 all = 0xffff;
    const __m512i v = _mm512_or_si512(
        _mm512_maskz_cvtepu16_epi32(all, lo),
        _mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, hi), 16));
    _mm512_storeu_si512(dst + d, v);
  }
}

}  // namespace

void bf16_gemm(Bf16Kernel kern, std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
               std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C, std::size_t ldc,
               bool accumulate) {
  if (kern == Bf16Kernel::amx)
    bf16_gemm_amx(M, N, Kp, A, lda, B, ldb, C, ldc, accumulate);
  else
    Gemm(M, N, Kp, A, lda, B, ldb, C, ldc, accumulate);
}

void bf16_round_rows(std::size_t rows, std::size_t n, std::size_t nz, const float* src,
                     std::size_t lds, std::uint16_t* dst, std::size_t ldd) {
  RoundRows(rows, n, nz, src, lds, dst, ldd);
}

void bf16_store_row(std::uint16_t* dst, const float* src, std::size_t n) { StoreRow(dst, src, n); }

void bf16_pack_v(const ForwardParams& p, int b, std::int64_t row0, std::int64_t j0,
                 std::int64_t cols, int hk, std::size_t Dp, std::size_t nrows, std::uint32_t* dst) {
  const std::size_t D = std::size_t(p.head_dim);
  const auto* v = static_cast<const std::uint16_t*>(p.v);
  auto row = [&](std::int64_t c) -> const std::uint16_t* {
    return c < cols ? v + operand_offset(p.v_strides, b, row0, j0 + c, hk) : nullptr;
  };
  for (std::size_t jp = 0; jp < nrows / 2; ++jp)
    InterleaveRows(row(std::int64_t(2 * jp)), row(std::int64_t(2 * jp + 1)), D, Dp, dst + jp * Dp);
}

#else  // not x86-64 GCC/Clang: never enabled, so these are never reached

void bf16_gemm(Bf16Kernel, std::size_t, std::size_t, std::size_t, const std::uint32_t*, std::size_t,
               const std::uint32_t*, std::size_t, float*, std::size_t, bool) {
  std::abort();
}
void bf16_round_rows(std::size_t, std::size_t, std::size_t, const float*, std::size_t,
                     std::uint16_t*, std::size_t) {
  std::abort();
}
void bf16_store_row(std::uint16_t*, const float*, std::size_t) { std::abort(); }
void bf16_pack_v(const ForwardParams&, int, std::int64_t, std::int64_t, std::int64_t, int,
                 std::size_t, std::size_t, std::uint32_t*) {
  std::abort();
}

#endif

}  // namespace flashattn::detail::cpu
