// Backward timing table (not a correctness test; disabled unless asked for):
//   test_backward_bench --gtest_also_run_disabled_tests
// bf16, B*S = 16384 tokens, H*D = 2048 (the shapes of ../shared/anchors), CUDA
// events, median of 10 runs after 3 warm-ups. Backward TFLOP/s = 2.5 x the
// forward's 4*B*H*S^2*D (halved when causal).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "flashattn/flashattn.hpp"

namespace {

using flashattn::Backend;
using flashattn::DType;
using flashattn::TensorView;

std::uint16_t to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return std::uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

struct Buf {
  void* p = nullptr;
  explicit Buf(std::size_t bytes) {
    if (cudaMalloc(&p, bytes) != cudaSuccess) throw std::runtime_error("cudaMalloc");
  }
  ~Buf() { cudaFree(p); }
};

void fill_random(void* dev, std::size_t n, std::uint32_t seed) {
  std::vector<std::uint16_t> h(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& v : h) {
    x = x * 1664525u + 1013904223u;
    v = to_bf16(float(x >> 8) / float(1 << 24) * 2.f - 1.f);
  }
  ASSERT_EQ(cudaMemcpy(dev, h.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
}

double median_ms(const std::function<void()>& f) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

TEST(BackwardBench, DISABLED_Table) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) GTEST_SKIP() << "no CUDA device";
  // Comma-separated integers from the environment, e.g. FA_BENCH_SEQS=1024,4096.
  auto int_list = [](const char* name, std::vector<int> fallback) {
    const char* e = std::getenv(name);
    if (e == nullptr) return fallback;
    std::vector<int> v;
    for (const char* s = e; *s;) {
      v.push_back(std::atoi(s));
      while (*s && *s != ',') ++s;
      if (*s) ++s;
    }
    return v;
  };
  const std::vector<int> seqs = int_list("FA_BENCH_SEQS", {1024, 4096});
  const std::vector<int> dims = int_list("FA_BENCH_DIMS", {64, 128});
  std::printf("BENCH d causal S B H | backend TFLOP/s ms\n");
  for (int d : dims) {
    for (bool causal : {false, true}) {
      for (int S : seqs) {
        const int H = 2048 / d, B = 16384 / S;
        const std::size_t nq = std::size_t(B) * S * H * d;
        Buf q(nq * 2), k(nq * 2), v(nq * 2), o(nq * 2), dout(nq * 2), dq(nq * 2), dk(nq * 2), dv(nq * 2),
            lse(std::size_t(B) * H * S * 4);
        fill_random(q.p, nq, 1);
        fill_random(k.p, nq, 2);
        fill_random(v.p, nq, 3);
        fill_random(dout.p, nq, 4);
        const flashattn::Device dev{flashattn::DeviceKind::cuda, 0};
        auto view = [&](void* p) { return flashattn::contiguous_view(p, DType::bf16, {B, S, H, d}, dev); };
        const TensorView lv = flashattn::contiguous_view(lse.p, DType::f32, {B, H, S}, dev);
        flashattn::Options opt;
        opt.causal = causal;
        flashattn::forward(view(q.p), view(k.p), view(v.p), view(o.p), lv, opt);
        const double flops = 2.5 * 4.0 * B * H * double(S) * S * d / (causal ? 2 : 1);
        struct Variant {
          const char* name;
          Backend b;
          bool det;
        };
        for (Variant var : {Variant{"sm90", Backend::cuda_sm90, false}, Variant{"sm90_det", Backend::cuda_sm90, true},
                            Variant{"sm80", Backend::cuda_sm80, false}, Variant{"sm80_det", Backend::cuda_sm80, true},
                            Variant{"portable", Backend::cuda_portable, false}}) {
          if (var.b == Backend::cuda_portable && std::getenv("FA_BENCH_NO_PORTABLE")) continue;
          // FA_BENCH_VARIANTS=sm90,sm90_det: only these (A/B runs under env switches).
          if (const char* only = std::getenv("FA_BENCH_VARIANTS")) {
            const std::string list = std::string(",") + only + ",";
            if (list.find(std::string(",") + var.name + ",") == std::string::npos) continue;
          }
          if (var.b == Backend::cuda_portable && S > 1024) continue;  // minutes per cell otherwise
          opt.backend = var.b;
          opt.deterministic = var.det;
          double ms = 0;
          try {
            ms = median_ms([&] {
              flashattn::backward(view(q.p), view(k.p), view(v.p), view(o.p), view(dout.p), lv, view(dq.p),
                                  view(dk.p), view(dv.p), opt);
            });
          } catch (const std::exception& e) {
            std::printf("BENCH %d %d %d %d %d | %s unsupported: %s\n", d, int(causal), S, B, H, var.name, e.what());
            continue;
          }
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          std::printf("BENCH %d %d %d %d %d | %s %.1f %.3f\n", d, int(causal), S, B, H, var.name, flops / ms / 1e9, ms);
        }
      }
    }
  }
}

}  // namespace
