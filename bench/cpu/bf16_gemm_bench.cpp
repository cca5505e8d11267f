// Measures, on one core, the bf16 product kernels of the CPU forward against
// the fp32 FMA rate (docs/perf/cpu.md, "bf16 products"): (1) the peak of
// vdpbf16ps and of fp32 FMAs (24 independent chains in registers each), (2) the
// forward's two tile products (S = Q K^T, O += P V; 96 x 128 x D and 96 x D x 128)
// with the avx512_bf16 kernel and with AMX tiles, operands resident in cache.
//   flashattn_cpu_bf16_gemm_bench [D]   (default D = 128)
#include <immintrin.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/bf16_dot.hpp"
#include "cpu/flash_common.hpp"
#include "half.hpp"

namespace {

using namespace flashattn::detail;
using namespace flashattn::detail::cpu;

double ThreadSeconds() {  // CPU time: the development machine is shared
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

constexpr long kIters = 20'000'000;

// A bf16 1.0 pair and a small bf16 pair: the chains grow slowly, never overflow.
__attribute__((target("avx512f,avx512bf16"), noinline)) double DpPeak() {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(float(i));
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33803380);
  const double t0 = ThreadSeconds();
  for (long it = 0; it < kIters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __asm__ volatile("" : "+v"(a));  // keep the loop from being folded
  }
  const double s = ThreadSeconds() - t0;
  __m512 sum = acc[0];
  for (int i = 1; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  if (_mm512_reduce_add_ps(sum) == 12345.f) std::printf("!");
  return 2.0 * 32.0 * 24.0 * double(kIters) / s / 1e9;
}

__attribute__((target("avx512f,fma"), noinline)) double FmaPeak() {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-7f * float(i));
  __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  const double t0 = ThreadSeconds();
  for (long it = 0; it < kIters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
    __asm__ volatile("" : "+v"(m));
  }
  const double s = ThreadSeconds() - t0;
  __m512 sum = acc[0];
  for (int i = 1; i < 24; ++i) sum = _mm512_add_ps(sum, acc[i]);
  if (_mm512_reduce_add_ps(sum) == 12345.f) std::printf("!");
  return 2.0 * 16.0 * 24.0 * double(kIters) / s / 1e9;
}

// GFLOP/s of C (M x N) (+)= A (M x 2Kp) B (2Kp x N) in bf16 pairs.
double Tile(Bf16Kernel kern, std::size_t M, std::size_t N, std::size_t Kp) {
  std::vector<std::uint32_t> A(M * Kp), B(Kp * N);
  std::vector<float> C(M * N);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  auto pair = [&] { return std::uint32_t(float_to_bf16(nd(rng))) | std::uint32_t(float_to_bf16(nd(rng))) << 16; };
  for (auto& x : A) x = pair();
  for (auto& x : B) x = pair();
  const int reps = 4000;
  const double t0 = ThreadSeconds();
  for (int r = 0; r < reps; ++r)
    bf16_gemm(kern, M, N, Kp, A.data(), Kp, B.data(), N, C.data(), N, r > 0);
  const double s = ThreadSeconds() - t0;
  return 4.0 * double(M * N * Kp) * reps / s / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t D = argc > 1 ? std::size_t(std::atoi(argv[1])) : 128;
  const std::size_t M = std::size_t(kBlockQ), N = std::size_t(kBlockK);
  const std::size_t Kp = std::size_t(round_up(std::int64_t(D + 1) / 2, 16)), Dp = std::size_t(round_up(std::int64_t(D), 16));
  if (!__builtin_cpu_supports("avx512bf16")) {
    std::printf("no avx512_bf16 on this CPU\n");
    return 0;
  }
  std::printf("fp32 FMA peak, one core: %.1f GFLOP/s\n", FmaPeak());
  std::printf("vdpbf16ps peak, one core: %.1f GFLOP/s\n", DpPeak());
  const bool amx = bf16_amx_usable();
  std::printf("shape (M x N x K)            avx512_bf16   AMX\n");
  std::printf("S = Q K^T  %3zu x %3zu x %3zu  %6.1f      %6.1f  GFLOP/s\n", M, N, 2 * Kp,
              Tile(Bf16Kernel::avx512, M, N, Kp), amx ? Tile(Bf16Kernel::amx, M, N, Kp) : 0.0);
  std::printf("O += P V   %3zu x %3zu x %3zu  %6.1f      %6.1f  GFLOP/s\n", M, Dp, N,
              Tile(Bf16Kernel::avx512, M, Dp, N / 2), amx ? Tile(Bf16Kernel::amx, M, Dp, N / 2) : 0.0);
  return 0;
}
