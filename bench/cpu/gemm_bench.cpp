// Measures, on one core: (1) the fp32 FMA peak (independent FMA chains in
// registers), (2) the flash backend's tile GEMM on the real tile shapes, and
// (3) OpenBLAS's cblas_sgemm on the same shapes (docs/perf/cpu.md).
//   flashattn_cpu_gemm_bench [D] [T]   (default D = 128; T: also measure the FMA
//                                      peak with T threads at once, summed)
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "gemm_bench.cpp"
#define HWY_DISABLED_TARGETS HWY_SSSE3
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <cblas.h>

#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/flash_common.hpp"
#include "cpu/flash_kernels-inl.hpp"
#include "hwy/highway.h"

#ifndef FLASHATTN_GEMM_BENCH_ONCE
#define FLASHATTN_GEMM_BENCH_ONCE
// CPU time of this thread: the machine this was tuned on is shared, and wall
// time there measures the neighbours as much as the kernel.
inline double ThreadSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}
#endif

HWY_BEFORE_NAMESPACE();
namespace flashattn::detail::cpu::HWY_NAMESPACE {

const char* Target() { return hwy::TargetName(HWY_TARGET); }

// GFLOP/s of 24 independent FMA chains (enough to cover latency x ports).
double FmaPeak() {
  const DF df;
  VF a[24];
  for (int i = 0; i < 24; ++i) a[i] = hn::Set(df, 1.0f + 1e-7f * float(i));
  const VF m = hn::Set(df, 0.9999999f), c = hn::Set(df, 1e-7f);
  const long iters = 20'000'000;
  const double t0 = ThreadSeconds();
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) a[i] = hn::MulAdd(a[i], m, c);
  }
  const double s = ThreadSeconds() - t0;
  float sink = 0;
  for (int i = 0; i < 24; ++i) sink += hn::GetLane(a[i]);
  if (sink == 12345.f) std::printf("!");
  return 2.0 * double(hn::Lanes(df)) * 24.0 * double(iters) / s / 1e9;
}

// GFLOP/s of Gemm(M, N, K) with A (M x K) and B (K x N) resident in cache.
double OwnGemm(std::size_t M, std::size_t N, std::size_t K, bool with_transpose) {
  std::vector<float> A(M * K), B(K * N), Bt(N * K), C(M * N);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& x : A) x = nd(rng);
  for (auto& x : Bt) x = nd(rng);
  const int reps = 2000;
  const double t0 = ThreadSeconds();
  for (int r = 0; r < reps; ++r) {
    if (with_transpose || r == 0)  // B given as N x K (like K rows): transpose it first
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < K; ++k) B[k * N + n] = Bt[n * K + k];
    Gemm(M, N, K, A.data(), std::ptrdiff_t(K), 1, B.data(), N, C.data(), N, r > 0);
  }
  const double s = ThreadSeconds() - t0;
  return 2.0 * double(M * N * K) * reps / s / 1e9;
}

// GFLOP/s of the forward's two tile products over one head of S keys, K^T and V
// packed as the backend packs them (so they stream from L2/L3 as they do there),
// without the softmax between them: the GEMM rate in its real memory context.
double StreamedTiles(std::size_t D, std::size_t S) {
  const std::size_t Bq = std::size_t(kBlockQ), Bk = std::size_t(kBlockK), nkb = S / Bk;
  std::vector<float> q(Bq * D), kt(nkb * D * Bk), v(nkb * Bk * D), st(Bq * Bk), o(Bq * D);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto* vec : {&q, &kt, &v})
    for (auto& x : *vec) x = nd(rng) * 0.01f;
  const int reps = 20;
  const double t0 = ThreadSeconds();
  for (int r = 0; r < reps; ++r)
    for (std::size_t qb = 0; qb < S / Bq; ++qb)
      for (std::size_t kb = 0; kb < nkb; ++kb) {
        Gemm(Bq, Bk, D, q.data(), std::ptrdiff_t(D), 1, kt.data() + kb * D * Bk, Bk, st.data(), Bk, false);
        Gemm(Bq, D, Bk, st.data(), std::ptrdiff_t(Bk), 1, v.data() + kb * Bk * D, D, o.data(), D, true);
      }
  const double s = ThreadSeconds() - t0;
  return 4.0 * double(Bq * Bk * D) * double(nkb) * double(S / Bq) * reps / s / 1e9;
}

}  // namespace flashattn::detail::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flashattn::detail::cpu {
HWY_EXPORT(Target);
HWY_EXPORT(FmaPeak);
HWY_EXPORT(OwnGemm);
HWY_EXPORT(StreamedTiles);
}  // namespace flashattn::detail::cpu

double BlasGemm(int M, int N, int K, bool b_trans) {
  std::vector<float> A(std::size_t(M * K)), B(std::size_t(K * N)), C(std::size_t(M * N));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& x : A) x = nd(rng);
  for (auto& x : B) x = nd(rng);
  const int reps = 2000;
  const double t0 = ThreadSeconds();
  for (int r = 0; r < reps; ++r)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A.data(), K,
                B.data(), b_trans ? K : N, r > 0 ? 1.0f : 0.0f, C.data(), N);
  const double s = ThreadSeconds() - t0;
  return 2.0 * double(M) * N * K * reps / s / 1e9;
}

int main(int argc, char** argv) {
  using namespace flashattn::detail::cpu;
  const int D = argc > 1 ? std::atoi(argv[1]) : 128;
  openblas_set_num_threads(1);
  const int M = int(kBlockQ), N = int(kBlockK);
  std::printf("target: %s; OpenBLAS %s, core %s\n", HWY_DYNAMIC_DISPATCH(Target)(), openblas_get_config(),
              openblas_get_corename());
  std::printf("fp32 FMA peak, one core: %.1f GFLOP/s\n", HWY_DYNAMIC_DISPATCH(FmaPeak)());
  if (argc > 2) {
    // All cores busy at once: the clock a core keeps under full AVX-512 load of
    // all of them may be lower than with one core busy.
    const int T = std::atoi(argv[2]);
    double sum = 0, lo = 1e30;
#pragma omp parallel num_threads(T) reduction(+ : sum) reduction(min : lo)
    {
      const double g = HWY_DYNAMIC_DISPATCH(FmaPeak)();
      sum += g;
      lo = g;
    }
    std::printf("fp32 FMA peak, %d cores at once: %.1f GFLOP/s (slowest core %.1f)\n", T, sum, lo);
  }
  std::printf("shape (M x N x K)            own      own+transpose   OpenBLAS\n");
  std::printf("S = Q K^T  %3d x %3d x %3d  %6.1f   %6.1f          %6.1f  GFLOP/s\n", M, N, D,
              HWY_DYNAMIC_DISPATCH(OwnGemm)(M, N, D, false), HWY_DYNAMIC_DISPATCH(OwnGemm)(M, N, D, true),
              BlasGemm(M, N, D, true));
  std::printf("O += P V   %3d x %3d x %3d  %6.1f   %6s          %6.1f  GFLOP/s\n", M, D, N,
              HWY_DYNAMIC_DISPATCH(OwnGemm)(M, D, N, false), "-", BlasGemm(M, D, N, false));
  std::printf("both products over one head of 2048 keys, K/V streamed: %.1f GFLOP/s\n",
              HWY_DYNAMIC_DISPATCH(StreamedTiles)(std::size_t(D), 2048));
  return 0;
}
#endif
