// The CUDA backward kernels (portable, sm80) forced through Options::backend on
// every feature, dtype, head dim and odd size, against the CPU fp64 reference
// backward with the one tolerance rule; gradient buffers poisoned with NaN; and
// deterministic mode: two runs bitwise equal.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "gpu_support.hpp"
#include "support.hpp"

namespace {

using namespace fa_test;
using flashattn::TensorView;

struct GpuGrads {
  Outputs o;  // out/lse are the forward inputs; dq/dk/dv/dbias come from the GPU
  Backend ran = Backend::automatic;
};

// Backward on the GPU from the reference forward's out/lse (so only the backward
// is under test), gradients poisoned with NaN before the launch.
// grad_offset shifts dout and the gradients off 16-byte alignment (bytes).
GpuGrads run_backward(const Problem& p, Backend backend, bool deterministic, std::size_t grad_offset = 0) {
  GpuGrads g;
  g.o = alloc_outputs(p, true);
  const Outputs fwd = run(p, Backend::cpu_reference, false);
  g.o.out = fwd.out;
  g.o.lse = fwd.lse;
  fa_gpu::DeviceArena arena;
  auto up = [&](const HostTensor& t) { return arena.upload(t); };
  flashattn::Options opt = p.options(backend, up);
  opt.deterministic = deterministic;
  const TensorView dq = arena.upload(g.o.dq, grad_offset), dk = arena.upload(g.o.dk, grad_offset),
                   dv = arena.upload(g.o.dv, grad_offset), dout = arena.upload(p.dout, grad_offset);
  std::optional<TensorView> dbias;
  if (g.o.dbias.defined()) dbias = up(g.o.dbias);
  const flashattn::Result r = flashattn::backward(up(p.q), up(p.k), up(p.v), up(g.o.out), dout,
                                                  up(g.o.lse), dq, dk, dv, opt, dbias);
  g.ran = r.backend;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) throw std::runtime_error(std::string("kernel: ") + cudaGetErrorString(err));
  fa_gpu::download(g.o.dq, dq);
  fa_gpu::download(g.o.dk, dk);
  fa_gpu::download(g.o.dv, dv);
  if (dbias) fa_gpu::download(g.o.dbias, *dbias);
  return g;
}

// The support reason when the backend cannot take this backward call; null when it can.
std::string unsupported(const Problem& p, Backend backend) {
  try {
    (void)run_backward(p, backend, false);
  } catch (const flashattn::Error& e) {
    if (e.code() == flashattn::ErrorCode::unsupported) return e.what();
    throw;
  }
  return {};
}

void expect_backward_matches(const Case& c, Backend backend, bool deterministic, std::size_t grad_offset = 0) {
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  GpuGrads g;
  try {
    g = run_backward(p, backend, deterministic, grad_offset);
  } catch (const flashattn::Error& e) {
    if (e.code() == flashattn::ErrorCode::unsupported) GTEST_SKIP() << e.what();
    ADD_FAILURE() << "backward threw: " << e.what();
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "backward threw: " << e.what();
    return;
  }
  EXPECT_EQ(g.ran, backend);
  const Outputs ref = run_reference(p, true);
  const bool low = c.dtype != DType::f32;
  Outputs naive;
  if (low) naive = run_naive_low_precision(p, true);
  auto one = [&](const char* what, const HostTensor Outputs::*f) {
    const std::vector<char> mask = p.valid_mask(what);
    const Verdict v = check(what, g.o.*f, ref.*f, low ? &(naive.*f) : nullptr, c.dtype, &mask);
    EXPECT_TRUE(v.ok) << v;
  };
  one("dq", &Outputs::dq);
  one("dk", &Outputs::dk);
  one("dv", &Outputs::dv);
  if (ref.dbias.defined()) one("dbias", &Outputs::dbias);
}

// Every feature once, on a few dtypes and head dims; sizes odd on purpose.
std::vector<Case> feature_cases() {
  std::vector<Case> v;
  auto base = [](DType dt, int d, std::int64_t sq, std::int64_t sk) {
    Case c;
    c.dtype = dt;
    c.head_dim = d;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    return c;
  };
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    for (int d : {32, 64, 128, 256}) v.push_back(base(dt, d, 113, 203));
    for (int d : {1, 40, 59, 96, 111, 192}) v.push_back(base(dt, d, 37, 29));
    Case c = base(dt, 64, 113, 203);
    c.causal = true;
    v.push_back(c);  // bottom-right
    c.alignment = Alignment::top_left;
    v.push_back(c);
    c = base(dt, 64, 203, 113);  // Sq > Sk, bottom-right causal: leading rows see nothing
    c.causal = true;
    v.push_back(c);
    c = base(dt, 96, 150, 150);
    c.window_left = 17;
    c.window_right = 5;
    v.push_back(c);
    c = base(dt, 64, 77, 91);
    c.softcap = 3.0f;
    c.scale = 0.9f;
    v.push_back(c);
    for (BiasKind bk : {BiasKind::full, BiasKind::bcast_batch, BiasKind::bcast_heads, BiasKind::bcast_both}) {
      c = base(dt, 64, 45, 70);
      c.heads_q = 3;
      c.heads_kv = 3;
      c.bias = bk;
      c.bias_grad = true;
      c.bias_f32 = bk == BiasKind::bcast_heads;
      c.causal = bk == BiasKind::bcast_both;
      v.push_back(c);
    }
    c = base(dt, 64, 61, 61);
    c.alibi = AlibiKind::per_batch_head;
    c.causal = true;
    v.push_back(c);
    c = base(dt, 128, 50, 83);
    c.alibi = AlibiKind::per_head;
    c.softcap = 10.0f;
    c.bias = BiasKind::full;
    v.push_back(c);
    c = base(dt, 64, 70, 90);  // GQA
    c.heads_q = 6;
    c.heads_kv = 2;
    c.causal = true;
    v.push_back(c);
    // Head dims above 128 (the sm80 kernel splits dK/dV columns over two blocks):
    // causal GQA with a full dbias (written by one slice only), and a windowed,
    // soft-capped varlen batch at 192.
    c = base(dt, 256, 150, 260);
    c.heads_q = 4;
    c.heads_kv = 2;
    c.causal = true;
    c.bias = BiasKind::full;
    c.bias_grad = true;
    v.push_back(c);
    c = base(dt, 192, 0, 0);
    c.varlen_q = {70, 0, 131};
    c.varlen_k = {90, 33, 140};
    c.window_left = 40;
    c.window_right = 7;
    c.softcap = 5.0f;
    v.push_back(c);
    c = base(dt, 128, 33, 65);  // MQA, permuted layout
    c.heads_q = 4;
    c.heads_kv = 1;
    c.layout = Layout::bhsd;
    v.push_back(c);
    c = base(dt, 80, 40, 40);  // padded rows
    c.layout = Layout::padded;
    c.window_left = 9;
    c.bias = BiasKind::bcast_both;
    c.bias_grad = true;
    v.push_back(c);
    c = base(dt, 64, 0, 0);  // varlen with empty sequences and padding rows
    c.varlen_q = {37, 0, 64, 5};
    c.varlen_k = {50, 12, 0, 71};
    c.varlen_pad_rows = 3;
    c.causal = true;
    c.heads_q = 4;
    c.heads_kv = 2;
    v.push_back(c);
    c.causal = false;
    c.bias = BiasKind::bcast_heads;
    c.bias_grad = true;
    c.head_dim = 128;
    v.push_back(c);
  }
  return v;
}

struct Param {
  Backend backend;
  Case c;
};

std::vector<Param> params() {
  std::vector<Param> v;
  for (Backend b : {Backend::cuda_portable, Backend::cuda_sm80})
    for (const Case& c : feature_cases()) {
      if (b == Backend::cuda_sm80 && c.dtype == DType::f32) continue;  // sm80 takes fp16/bf16 only
      v.push_back({b, c});
    }
  return v;
}

class Backward : public ::testing::TestWithParam<Param> {};

TEST_P(Backward, MatchesReference) {
  FA_SKIP_WITHOUT_GPU(GetParam().backend == Backend::cuda_sm80 ? 80 : 75);
  expect_backward_matches(GetParam().c, GetParam().backend, false);
}

TEST_P(Backward, DeterministicMatchesReference) {
  FA_SKIP_WITHOUT_GPU(GetParam().backend == Backend::cuda_sm80 ? 80 : 75);
  const Case& c = GetParam().c;
  // The deterministic passes on the feature-heavy subset keep the suite short.
  if (c.bias == BiasKind::none && c.heads_q == c.heads_kv && !c.varlen() && !c.causal)
    GTEST_SKIP() << "covered by the non-deterministic run";
  expect_backward_matches(c, GetParam().backend, true);
}

INSTANTIATE_TEST_SUITE_P(Gpu, Backward, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param>& i) {
                           return std::string(flashattn::backend_name(i.param.backend)) + "_" + i.param.c.name();
                         });

// Support is decided before dout and the gradients are seen; the sm80 backward
// must still be right (it hands such calls to the portable kernel) when they are
// not 16-byte aligned.
TEST(BackwardSm80, MisalignedGradients) {
  FA_SKIP_WITHOUT_GPU(80);
  Case c;
  c.dtype = DType::bf16;
  c.head_dim = 64;
  c.seqlen_q = 45;
  c.seqlen_k = 70;
  c.causal = true;
  for (bool det : {false, true}) expect_backward_matches(c, Backend::cuda_sm80, det, 2);
}

// deterministic=true: two runs on the same inputs give bitwise-equal gradients,
// on a problem where atomics would sum in varying order (GQA, broadcast dbias,
// many key blocks per query row).
class Determinism : public ::testing::TestWithParam<Backend> {};

TEST_P(Determinism, TwoRunsBitwiseEqual) {
  FA_SKIP_WITHOUT_GPU(GetParam() == Backend::cuda_sm80 ? 80 : 75);
  for (DType dt : {DType::f32, DType::bf16}) {
    if (dt == DType::f32 && GetParam() == Backend::cuda_sm80) continue;
    Case c;
    c.dtype = dt;
    c.batch = 2;
    c.heads_q = 4;
    c.heads_kv = 2;
    c.head_dim = 64;
    c.seqlen_q = 300;
    c.seqlen_k = 700;
    c.bias = BiasKind::bcast_both;
    c.bias_grad = true;
    const Problem p = make_problem(c);
    SCOPED_TRACE(p.describe());
    if (const std::string why = unsupported(p, GetParam()); !why.empty()) GTEST_SKIP() << why;
    const GpuGrads a = run_backward(p, GetParam(), true), b = run_backward(p, GetParam(), true);
    for (auto f : {&Outputs::dq, &Outputs::dk, &Outputs::dv, &Outputs::dbias}) {
      const HostTensor& x = a.o.*f;
      const HostTensor& y = b.o.*f;
      ASSERT_EQ(x.storage_bytes(), y.storage_bytes());
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.storage_bytes()), 0) << "gradients differ between runs";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Gpu, Determinism, ::testing::Values(Backend::cuda_portable, Backend::cuda_sm80),
                         [](const ::testing::TestParamInfo<Backend>& i) {
                           return std::string(flashattn::backend_name(i.param));
                         });

}  // namespace
