// The Hopper (sm_90a) forward kernel forced through dispatch on every feature it
// takes, odd sizes, poisoned outputs and the one tolerance rule; which kernel
// automatic dispatch picks; and a timing table (disabled unless asked for:
// --gtest_also_run_disabled_tests --gtest_filter='*Bench*').
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gpu_support.hpp"
#include "support.hpp"

namespace {

using namespace fa_test;
using flashattn::Device;
using flashattn::DeviceKind;
using flashattn::TensorView;

bool on_sm90() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    return false;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  return prop.major == 9 && prop.minor == 0;
}

#define SKIP_UNLESS_SM90() \
  if (!on_sm90()) GTEST_SKIP() << "needs an sm_90 GPU"

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// Device copies of host tensors, same strides; freed at scope end.
class DeviceCopies {
 public:
  ~DeviceCopies() {
    for (void* p : ptrs_) cudaFree(p);
  }
  TensorView upload(const HostTensor& t) {
    void* d = nullptr;
    const std::size_t bytes = std::max<std::size_t>(t.storage_bytes(), 16);
    if (cudaMalloc(&d, bytes) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
    ptrs_.push_back(d);
    if (t.storage_bytes() > 0 && cudaMemcpy(d, t.data(), t.storage_bytes(), cudaMemcpyHostToDevice) != cudaSuccess)
      throw std::runtime_error("cudaMemcpy failed");
    return t.view_on(d, Device{DeviceKind::cuda, 0});
  }

 private:
  std::vector<void*> ptrs_;
};

void download(HostTensor& t, const TensorView& dev) {
  if (t.storage_bytes() == 0) return;
  ASSERT_EQ(cudaMemcpy(t.data(), dev.data, t.storage_bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
}

// Runs the forward on the GPU with poisoned outputs; returns outputs and the backend that ran.
Outputs run_gpu(const Problem& p, Backend backend, Backend* ran) {
  DeviceCopies dc;
  Outputs o = alloc_outputs(p, false);  // NaN-poisoned; the poison travels to the device
  const TensorView out = dc.upload(o.out), lse = dc.upload(o.lse);
  const flashattn::Options opt = p.options(backend, [&](const HostTensor& t) { return dc.upload(t); });
  const flashattn::Result r = flashattn::forward(dc.upload(p.q), dc.upload(p.k), dc.upload(p.v), out, lse, opt);
  if (ran) *ran = r.backend;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  download(o.out, out);
  download(o.lse, lse);
  return o;
}

void expect_matches_reference(const Case& c) {
  const Problem p = make_problem(c);
  Backend ran = Backend::automatic;
  const Outputs ours = run_gpu(p, Backend::cuda_sm90, &ran);
  EXPECT_EQ(ran, Backend::cuda_sm90);
  const Outputs ref = run_reference(p, false);
  const Outputs naive = run_naive_low_precision(p, false);
  for (const Verdict& v : check_outputs(p, ours, ref, &naive, false)) EXPECT_TRUE(v.ok) << p.describe() << "\n" << v;
}

Case base(DType dt, int d, std::int64_t sq, std::int64_t sk) { return fa_gpu::small_case(dt, d, sq, sk); }

std::vector<Case> cases() {
  std::vector<Case> v;
  // Every dtype and head dim, plain and causal.
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128, 256})
      for (bool causal : {false, true}) {
        Case c = base(dt, d, 300, 300);
        c.causal = causal;
        v.push_back(c);
      }
  // Odd sizes (bf16, d = 128).
  for (auto [sq, sk] : {std::pair<int, int>{1, 1}, {17, 17}, {113, 113}, {1000, 1000}, {113, 1000}, {1000, 113},
                        {1, 700}, {700, 1}}) {
    Case c = base(DType::bf16, 128, sq, sk);
    v.push_back(c);
    c.causal = true;
    v.push_back(c);
    c.alignment = Alignment::top_left;
    v.push_back(c);
  }
  {
    Case c = base(DType::bf16, 128, 4097, 4097);
    c.batch = 1;
    c.heads_q = c.heads_kv = 1;
    c.causal = true;
    v.push_back(c);
  }
  // Sliding windows, both alignments.
  for (auto [l, r] : {std::pair<int, int>{50, 20}, {0, 0}, {100, -1}, {-1, 30}})
    for (Alignment a : {Alignment::bottom_right, Alignment::top_left}) {
      Case c = base(DType::bf16, 64, 333, 517);
      c.window_left = l;
      c.window_right = r;
      c.alignment = a;
      v.push_back(c);
    }
  // Softcap, custom scale.
  for (int d : {64, 256}) {
    Case c = base(DType::f16, d, 257, 190);
    c.softcap = 15.0f;
    c.scale = 0.3f;
    c.causal = true;
    v.push_back(c);
  }
  // GQA and MQA.
  for (int hk : {2, 1}) {
    Case c = base(DType::bf16, 128, 200, 333);
    c.heads_q = 8;
    c.heads_kv = hk;
    c.causal = hk == 1;
    v.push_back(c);
  }
  fa_gpu::append_layout_and_varlen_cases(v);  // bhsd order; varlen with empty/padding rows
  // More tiles than SMs: each persistent CTA walks several tiles, so Q and K/V
  // barrier phases carry across tiles (fixed and varlen, skipped varlen tiles).
  {
    Case c = base(DType::bf16, 64, 517, 517);
    c.batch = 3;
    c.heads_q = 24;
    c.heads_kv = 8;
    c.causal = true;
    v.push_back(c);
    c = base(DType::f16, 128, 300, 300);
    c.batch = 4;
    c.heads_q = c.heads_kv = 16;
    v.push_back(c);
    c = base(DType::bf16, 128, 0, 0);
    for (int i = 0; i < 50; ++i) {
      c.varlen_q.push_back((i * 37) % 300);
      c.varlen_k.push_back((i * 53 + 11) % 350);
    }
    c.heads_q = c.heads_kv = 4;
    c.causal = true;
    v.push_back(c);
  }
  return v;
}

class Sm90Forward : public ::testing::TestWithParam<Case> {};

TEST_P(Sm90Forward, MatchesReference) {
  SKIP_UNLESS_SM90();
  expect_matches_reference(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Cases, Sm90Forward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           // The index keeps names unique when a long varlen name is cut.
                           return std::to_string(i.index) + "_" + i.param.name().substr(0, 100);
                         });

TEST(Sm90Dispatch, AutomaticPicksSm90ForBf16D128) {
  SKIP_UNLESS_SM90();
  const Problem p = make_problem(base(DType::bf16, 128, 256, 256));
  Backend ran = Backend::cpu_reference;
  const Outputs ours = run_gpu(p, Backend::automatic, &ran);
  EXPECT_EQ(ran, Backend::cuda_sm90);
}

TEST(Sm90Dispatch, BiasFallsBackToSm80) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 128, 128, 128);
  c.bias = BiasKind::full;
  const Problem p = make_problem(c);
  DeviceCopies dc;
  auto map = [&](const HostTensor& t) { return dc.upload(t); };
  const flashattn::Support s = flashattn::supports(Backend::cuda_sm90, map(p.q), map(p.k), map(p.v), p.options(Backend::cuda_sm90, map));
  EXPECT_FALSE(s.ok);
  EXPECT_NE(s.reason, nullptr);
  Backend ran = Backend::cpu_reference;
  (void)run_gpu(p, Backend::automatic, &ran);
  EXPECT_EQ(ran, Backend::cuda_sm80);
}

TEST(Sm90Dispatch, UnalignedStridesFallBack) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 128, 100, 100);
  c.layout = Layout::padded;  // row stride heads*dim + 3: not a TMA stride
  const Problem p = make_problem(c);
  Backend ran = Backend::cpu_reference;
  (void)run_gpu(p, Backend::automatic, &ran);
  EXPECT_NE(ran, Backend::cuda_sm90);
  EXPECT_THROW((void)run_gpu(p, Backend::cuda_sm90, nullptr), flashattn::Error);
}

// Timing table: bf16 (and fp16), 16k tokens, H*D = 2048, as the peers' anchors.
TEST(Sm90Bench, DISABLED_Table) {
  SKIP_UNLESS_SM90();
  const char* env = std::getenv("FA_BENCH_DTYPES");
  std::vector<DType> dts = {DType::bf16};
  if (env && std::string(env) == "both") dts.push_back(DType::f16);
  if (env && std::string(env) == "fp16") dts = {DType::f16};
  // Optional filters for A/B runs: FA_BENCH_DIMS=64,128  FA_BENCH_CAUSAL=1  FA_BENCH_SM80=0.
  auto listed = [](const char* name, int value) {
    const char* e = std::getenv(name);
    if (e == nullptr || *e == '\0') return true;
    const std::string list = std::string(",") + e + ",";
    return list.find("," + std::to_string(value) + ",") != std::string::npos;
  };
  const char* sm80_env = std::getenv("FA_BENCH_SM80");
  const bool with_sm80 = sm80_env == nullptr || std::string(sm80_env) != "0";
  std::printf("BENCH dtype D causal S B H ms_sm90 tflops_sm90 ms_sm80 tflops_sm80\n");
  for (DType dt : dts)
    for (int d : {64, 128, 256})
      for (bool causal : {false, true})
        for (int s : {512, 1024, 2048, 4096, 8192, 16384}) {
          if (!listed("FA_BENCH_DIMS", d) || !listed("FA_BENCH_CAUSAL", int(causal))) continue;
          const int b = 16384 / s, h = 2048 / d;
          const std::size_t n = std::size_t(b) * s * h * d;
          std::vector<std::uint16_t> host(n);
          std::mt19937 rng(1234);
          for (auto& x : host) x = std::uint16_t(0x3c00 ^ (rng() & 0x03ff));  // fp16/bf16 of moderate size
          void *q, *k, *vv, *o, *l;
          CUDA_OK(cudaMalloc(&q, n * 2));
          CUDA_OK(cudaMalloc(&k, n * 2));
          CUDA_OK(cudaMalloc(&vv, n * 2));
          CUDA_OK(cudaMalloc(&o, n * 2));
          CUDA_OK(cudaMalloc(&l, std::size_t(b) * h * s * 4));
          for (void* p : {q, k, vv}) CUDA_OK(cudaMemcpy(p, host.data(), n * 2, cudaMemcpyHostToDevice));
          const Device dev{DeviceKind::cuda, 0};
          auto view = [&](void* p) { return flashattn::contiguous_view(p, dt, {b, s, h, d}, dev); };
          const TensorView lse = flashattn::contiguous_view(l, DType::f32, {b, h, s}, dev);
          double ms[2] = {NAN, NAN};
          int bi = 0;
          for (Backend be : {Backend::cuda_sm90, Backend::cuda_sm80}) {
            if (be == Backend::cuda_sm80 && !with_sm80) break;
            flashattn::Options opt;
            opt.causal = causal;
            opt.backend = be;
            try {
              for (int i = 0; i < 5; ++i) flashattn::forward(view(q), view(k), view(vv), view(o), lse, opt);
              cudaEvent_t e0, e1;
              cudaEventCreate(&e0);
              cudaEventCreate(&e1);
              std::vector<float> t;
              for (int i = 0; i < 20; ++i) {
                cudaEventRecord(e0);
                flashattn::forward(view(q), view(k), view(vv), view(o), lse, opt);
                cudaEventRecord(e1);
                cudaEventSynchronize(e1);
                float x = 0;
                cudaEventElapsedTime(&x, e0, e1);
                t.push_back(x);
              }
              std::sort(t.begin(), t.end());
              ms[bi] = t[t.size() / 2];
              cudaEventDestroy(e0);
              cudaEventDestroy(e1);
            } catch (const std::exception&) {
            }
            ++bi;
          }
          const double flops = 4.0 * b * h * double(s) * s * d / (causal ? 2.0 : 1.0);
          std::printf("BENCH %s %d %d %d %d %d %.4f %.1f %.4f %.1f\n", dt == DType::bf16 ? "bf16" : "fp16", d,
                      int(causal), s, b, h, ms[0], flops / ms[0] * 1e-9, ms[1], flops / ms[1] * 1e-9);
          std::fflush(stdout);
          for (void* p : {q, k, vv, o, l}) cudaFree(p);
        }
}

}  // namespace
