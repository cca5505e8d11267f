// Times the CPU flash backend through the public API and reports GFLOP/s and the
// fraction of a given fp32 FMA peak (docs/perf/cpu.md).
//   flashattn_cpu_bench [--peak GFLOPS] [--b 1] [--h 16] [--s 2048] [--d 128]
//                       [--dtype f32|bf16|f16] [--causal 0|1] [--reps 3] [--threads 0]
//                       [--bwd 0|1]
// FLOPs: forward 4*B*H*Sq*Sk*D (halved when causal), backward 2.5x forward.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <cstdlib>
#include <vector>

#include "flashattn/flashattn.hpp"
#include "half.hpp"  // src/: input conversion

using namespace flashattn;

// CPU seconds of the whole process: on a shared machine, flops per CPU-second
// per thread is the rate the cores delivered while they were ours.
static int omp_threads() {
  const char* e = std::getenv("OMP_NUM_THREADS");
  return e ? std::atoi(e) : int(std::thread::hardware_concurrency());
}

static double process_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

int main(int argc, char** argv) {
  double peak = 0;
  std::int64_t B = 1, H = 16, S = 2048, D = 128;
  int reps = 3, threads = 0, causal = -1, bwd = 1;
  std::string dt = "all";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--peak") peak = std::atof(v);
    else if (a == "--b") B = std::atoll(v);
    else if (a == "--h") H = std::atoll(v);
    else if (a == "--s") S = std::atoll(v);
    else if (a == "--d") D = std::atoll(v);
    else if (a == "--dtype") dt = v;
    else if (a == "--causal") causal = std::atoi(v);
    else if (a == "--reps") reps = std::atoi(v);
    else if (a == "--threads") threads = std::atoi(v);
    else if (a == "--bwd") bwd = std::atoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  std::vector<DType> dtypes;
  if (dt == "all" || dt == "f32") dtypes.push_back(DType::f32);
  if (dt == "all" || dt == "bf16") dtypes.push_back(DType::bf16);
  if (dt == "f16") dtypes.push_back(DType::f16);
  std::vector<int> causals = causal < 0 ? std::vector<int>{0, 1} : std::vector<int>{causal};

  const std::int64_t n = B * S * H * D;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> src(std::size_t(n * 5));
  for (auto& x : src) x = nd(rng);
  std::printf("%-8s %-6s %-4s %9s %9s %8s %14s %8s\n", "dtype", "causal", "pass", "ms", "GFLOP/s", "of_peak",
              "GFLOP/cpu-s", "of_peak");
  for (DType t : dtypes) {
    // q, k, v, dout, then out, dq, dk, dv (and a spare), all (B, S, H, D) in the dtype.
    std::vector<unsigned char> mem(std::size_t(n) * 9 * dtype_size(t));
    auto view = [&](int idx) {
      return contiguous_view(mem.data() + std::size_t(idx) * std::size_t(n) * dtype_size(t), t, {B, S, H, D});
    };
    for (int idx = 0; idx < 4; ++idx) {
      unsigned char* base = mem.data() + std::size_t(idx) * std::size_t(n) * dtype_size(t);
      for (std::int64_t e = 0; e < n; ++e) {
        const float x = src[std::size_t(idx * n + e)];
        if (t == DType::f32) {
          std::memcpy(base + 4 * e, &x, 4);
        } else {
          const std::uint16_t h = t == DType::bf16 ? detail::float_to_bf16(x) : detail::float_to_fp16(x);
          std::memcpy(base + 2 * e, &h, 2);
        }
      }
    }
    std::vector<float> lse(std::size_t(B * H * S));
    const TensorView lv = contiguous_view(lse.data(), DType::f32, {B, H, S});
    for (int c : causals) {
      Options o;
      o.backend = Backend::cpu_flash;
      o.causal = c != 0;
      o.num_threads = threads;
      const double fwd_flops = 4.0 * double(B * H) * double(S) * double(S) * double(D) * (c ? 0.5 : 1.0);
      for (int pass = 0; pass < (bwd ? 2 : 1); ++pass) {
        auto call = [&] {
          if (pass == 0)
            forward(view(0), view(1), view(2), view(4), lv, o);
          else
            backward(view(0), view(1), view(2), view(4), view(3), lv, view(5), view(6), view(7), o);
        };
        call();  // warm-up (and, for pass 0, the out/lse the backward reads)
        std::vector<double> ms, cpu;
        for (int r = 0; r < reps; ++r) {
          const auto t0 = std::chrono::steady_clock::now();
          const double c0 = process_seconds();
          call();
          cpu.push_back(process_seconds() - c0);
          ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        }
        std::sort(cpu.begin(), cpu.end());
        std::sort(ms.begin(), ms.end());
        const double med = ms[ms.size() / 2];
        const double flops = fwd_flops * (pass ? 2.5 : 1.0);
        const double gf = flops / (med * 1e6);
        // Per-core rate while running, times the thread count: what the cores would
        // deliver if they were not shared.
        const int nt = threads > 0 ? threads : omp_threads();
        const double gfc = flops / cpu[cpu.size() / 2] / 1e9 * nt;
        std::printf("%-8s %-6d %-4s %9.2f %9.1f %7.1f%% %14.1f %7.1f%%\n", dtype_name(t), c, pass ? "bwd" : "fwd",
                    med, gf, peak > 0 ? 100.0 * gf / peak : 0.0, gfc, peak > 0 ? 100.0 * gfc / peak : 0.0);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
