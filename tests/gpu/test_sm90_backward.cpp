// The Hopper (sm_90a) backward forced through Options::backend on every feature it
// takes (the shared feature cases it supports plus its own: both dtypes and head
// dims, odd sizes and Sq != Sk both ways, causal in both alignments, windows,
// softcap, GQA/MQA, varlen with empty sequences and NaN padding rows, padded head
// dims), gradients poisoned with NaN, against the fp64 reference with the one
// tolerance rule; deterministic mode; and which backend automatic dispatch picks
// for the backward, including the fallback for a feature it refuses (bias).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <initializer_list>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "backward_support.hpp"

namespace {

using namespace fa_test;

#define SKIP_UNLESS_SM90()                                                                      \
  do {                                                                                          \
    if (fa_gpu::device_count() == 0 || fa_gpu::device_arch() != 90) GTEST_SKIP() << "needs an sm_90 GPU"; \
  } while (0)

// What the wgmma backward takes (sm90_backward_unsupported): a case listed here
// that it refuses is a failure, not a skip.
bool sm90_takes(const Case& c) {
  return c.dtype != DType::f32 && c.bias == BiasKind::none && c.alibi == AlibiKind::none && c.head_dim % 8 == 0 &&
         c.head_dim <= 256 && c.layout != Layout::padded;
}

Case base(DType dt, int d, std::int64_t sq, std::int64_t sk) { return fa_gpu::small_case(dt, d, sq, sk); }

// Each size non-causal and causal in both alignments (bf16, head dim d).
void add_sizes_all_masks(std::vector<Case>& v, int d, std::initializer_list<std::pair<int, int>> sizes) {
  for (auto [sq, sk] : sizes) {
    Case c = base(DType::bf16, d, sq, sk);
    v.push_back(c);
    c.causal = true;
    v.push_back(c);
    c.alignment = Alignment::top_left;
    v.push_back(c);
  }
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (const Case& c : fa_gpu::backward_feature_cases())
    if (sm90_takes(c)) v.push_back(c);
  // Both dtypes and head dims, several key blocks and query tiles, plain and causal.
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128})
      for (bool causal : {false, true}) {
        Case c = base(dt, d, 300, 300);
        c.causal = causal;
        v.push_back(c);
      }
  // Odd sizes and Sq != Sk both ways (bf16, d = 128), causal in both alignments.
  add_sizes_all_masks(v, 128, {{1, 1}, {17, 17}, {113, 113}, {113, 700}, {700, 113}, {1, 300}, {300, 1}});
  {
    Case c = base(DType::bf16, 128, 1000, 1000);
    c.batch = 1;
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
  // Softcap with a custom scale, both head dims.
  {
    Case c = base(DType::f16, 64, 257, 190);
    c.softcap = 15.0f;
    c.scale = 0.3f;
    c.causal = true;
    v.push_back(c);
    c = base(DType::bf16, 128, 200, 300);
    c.softcap = 5.0f;
    v.push_back(c);
  }
  // GQA and MQA (dK/dV summed over the group inside the CTA).
  for (int hk : {2, 1}) {
    Case c = base(DType::bf16, 128, 200, 333);
    c.heads_q = 8;
    c.heads_kv = hk;
    c.causal = hk == 1;
    v.push_back(c);
  }
  {
    Case c = base(DType::bf16, 64, 517, 517);  // many tiles per key block, GQA, causal
    c.batch = 3;
    c.heads_q = 24;
    c.heads_kv = 8;
    c.causal = true;
    v.push_back(c);
  }
  fa_gpu::append_layout_and_varlen_cases(v);  // bhsd order; varlen with empty/padding rows
  // D = 256 bucket (64-key blocks, each consumer warpgroup half the columns, dQ by
  // reductions): both dtypes, plain and causal, odd sizes and Sq != Sk, softcap,
  // GQA/MQA, windows, varlen with NaN padding; 192 and 136 padded up to it.
  for (DType dt : {DType::bf16, DType::f16})
    for (bool causal : {false, true}) {
      Case c = base(dt, 256, 300, 300);
      c.causal = causal;
      v.push_back(c);
    }
  add_sizes_all_masks(v, 256, {{1, 1}, {17, 17}, {113, 700}, {700, 113}, {65, 129}});
  {
    Case c = base(DType::bf16, 256, 200, 300);
    c.softcap = 5.0f;
    c.causal = true;
    v.push_back(c);
    c = base(DType::bf16, 256, 200, 333);
    c.heads_q = 8;
    c.heads_kv = 2;
    v.push_back(c);
    c.heads_kv = 1;
    c.causal = true;
    v.push_back(c);
    c = base(DType::f16, 256, 333, 517);
    c.window_left = 50;
    c.window_right = 20;
    v.push_back(c);
    c = base(DType::bf16, 256, 0, 0);
    c.varlen_q = {0, 17, 300, 1, 129, 0};
    c.varlen_k = {5, 0, 280, 64, 400, 0};
    c.varlen_pad_rows = 3;
    c.causal = true;
    v.push_back(c);
    c = base(DType::bf16, 192, 250, 200);
    c.causal = true;
    v.push_back(c);
    c = base(DType::f16, 192, 150, 150);
    c.softcap = 10.0f;
    v.push_back(c);
    c = base(DType::bf16, 136, 100, 333);
    v.push_back(c);
  }
  // Head dims padded to the 64/128 buckets (columns past the row read as zero).
  {
    Case c = base(DType::bf16, 96, 200, 250);
    c.causal = true;
    v.push_back(c);
    c = base(DType::f16, 40, 150, 150);
    v.push_back(c);
    c = base(DType::bf16, 72, 100, 333);
    c.window_left = 30;
    v.push_back(c);
  }
  // v4 coverage: D = 256 with 17 query tiles per key block (the Q/dO ring, whose
  // stages hold the dQ staging, turns over many times) and a tail tile; an odd head
  // count at D = 64 (the row-sum kernel's last warp half empty).
  {
    Case c = base(DType::bf16, 256, 1030, 1030);
    c.batch = 1;
    v.push_back(c);
    c = base(DType::f16, 64, 200, 260);
    c.heads_q = 3;
    c.heads_kv = 1;
    c.causal = true;
    v.push_back(c);
  }
  return v;
}

std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  // The index keeps names unique when a long varlen name is cut.
  return std::to_string(i.index) + "_" + i.param.name().substr(0, 100);
}

class Sm90Backward : public ::testing::TestWithParam<Case> {};

TEST_P(Sm90Backward, MatchesReference) {
  SKIP_UNLESS_SM90();
  ASSERT_TRUE(sm90_takes(GetParam()));
  fa_gpu::expect_backward_matches(GetParam(), Backend::cuda_sm90, false, 0, /*must_support=*/true);
}

INSTANTIATE_TEST_SUITE_P(Cases, Sm90Backward, ::testing::ValuesIn(cases()), case_name);

// Deterministic mode: dK/dV from the wgmma kernel (fixed order by construction),
// dQ from the sm80 tensor-core pass; the feature-heavy cases.
std::vector<Case> deterministic_cases() {
  std::vector<Case> v;
  Case c = base(DType::bf16, 128, 300, 300);
  c.causal = true;
  v.push_back(c);
  c = base(DType::f16, 64, 200, 333);
  c.heads_q = 6;
  c.heads_kv = 2;
  c.window_left = 40;
  v.push_back(c);
  c = base(DType::bf16, 64, 0, 0);
  c.varlen_q = {37, 0, 64, 5};
  c.varlen_k = {50, 12, 0, 71};
  c.varlen_pad_rows = 3;
  c.causal = true;
  c.heads_q = 4;
  c.heads_kv = 2;
  v.push_back(c);
  c = base(DType::bf16, 128, 77, 91);
  c.softcap = 3.0f;
  v.push_back(c);
  c = base(DType::bf16, 256, 200, 333);  // the D = 256 kernel without its dQ product
  c.causal = true;
  c.heads_q = 4;
  c.heads_kv = 2;
  v.push_back(c);
  c = base(DType::f16, 192, 0, 0);
  c.varlen_q = {37, 0, 64, 5};
  c.varlen_k = {50, 12, 0, 71};
  c.varlen_pad_rows = 3;
  v.push_back(c);
  return v;
}

class Sm90BackwardDeterministic : public ::testing::TestWithParam<Case> {};

TEST_P(Sm90BackwardDeterministic, MatchesReference) {
  SKIP_UNLESS_SM90();
  fa_gpu::expect_backward_matches(GetParam(), Backend::cuda_sm90, true, 0, /*must_support=*/true);
}

INSTANTIATE_TEST_SUITE_P(Cases, Sm90BackwardDeterministic, ::testing::ValuesIn(deterministic_cases()), case_name);

TEST(Sm90BackwardDeterminism, TwoRunsBitwiseEqual) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 128, 300, 700);
  c.heads_q = 4;
  c.heads_kv = 2;
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  const fa_gpu::GpuGrads a = fa_gpu::run_backward(p, Backend::cuda_sm90, true);
  const fa_gpu::GpuGrads b = fa_gpu::run_backward(p, Backend::cuda_sm90, true);
  EXPECT_EQ(a.ran, Backend::cuda_sm90);
  for (auto f : {&Outputs::dq, &Outputs::dk, &Outputs::dv}) {
    const HostTensor& x = a.o.*f;
    const HostTensor& y = b.o.*f;
    ASSERT_EQ(x.storage_bytes(), y.storage_bytes());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.storage_bytes()), 0) << "gradients differ between runs";
  }
}

// Automatic dispatch takes the wgmma backward where it can run the call.
TEST(Sm90BackwardDispatch, AutomaticPicksSm90) {
  SKIP_UNLESS_SM90();
  for (DType dt : {DType::bf16, DType::f16})
    for (int d : {64, 128, 256}) {
      Case c = base(dt, d, 256, 256);
      c.causal = d == 64;
      fa_gpu::expect_backward_matches(c, Backend::automatic, false, 0, true, Backend::cuda_sm90);
    }
}

// A refused feature (bias, with dbias) names its reason when forced and falls to
// sm80 under automatic dispatch.
TEST(Sm90BackwardDispatch, BiasFallsBackToSm80) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 128, 128, 160);
  c.bias = BiasKind::full;
  c.bias_grad = true;
  const Problem p = make_problem(c);
  const std::string why = fa_gpu::backward_unsupported(p, Backend::cuda_sm90);
  EXPECT_NE(why.find("bias"), std::string::npos) << why;
  fa_gpu::expect_backward_matches(c, Backend::automatic, false, 0, true, Backend::cuda_sm80);
}

// Row strides that are not multiples of 8 elements cannot be TMA operands.
TEST(Sm90BackwardDispatch, UnalignedStridesFallBack) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 64, 100, 100);
  c.layout = Layout::padded;
  const Problem p = make_problem(c);
  EXPECT_NE(fa_gpu::backward_unsupported(p, Backend::cuda_sm90), "");
  const fa_gpu::GpuGrads g = fa_gpu::run_backward(p, Backend::automatic, false);
  EXPECT_NE(g.ran, Backend::cuda_sm90);
}

// Support is decided before dout and the gradients are seen: misaligned ones are
// handed on inside the call (sm80, then portable) and must still be right.
TEST(Sm90BackwardDispatch, MisalignedGradients) {
  SKIP_UNLESS_SM90();
  Case c = base(DType::bf16, 128, 45, 70);
  c.causal = true;
  for (bool det : {false, true}) fa_gpu::expect_backward_matches(c, Backend::cuda_sm90, det, 2, true);
}


// The scratch kernels read O and write dQ 16 bytes at a time; an `out` or `dq` off
// 16-byte alignment (which the kernel itself allows: out is read only by them, dQ
// goes through the fp32 accumulator) takes the shared element-wise kernels instead.
TEST(Sm90BackwardDispatch, MisalignedOutOrDqUsesSharedScratch) {
  SKIP_UNLESS_SM90();
  for (int which = 0; which < 2; ++which) {
    Case c = base(DType::bf16, 64, 70, 90);
    c.causal = which == 1;
    const Problem p = make_problem(c);
    SCOPED_TRACE(p.describe() + (which == 0 ? " out +2 bytes" : " dq +2 bytes"));
    Outputs o = alloc_outputs(p, true);
    const Outputs fwd = run(p, Backend::cpu_reference, false);
    o.out = fwd.out;
    o.lse = fwd.lse;
    fa_gpu::DeviceArena arena;
    auto up = [&](const HostTensor& t) { return arena.upload(t); };
    flashattn::Options opt = p.options(Backend::cuda_sm90, up);
    const flashattn::TensorView out = arena.upload(o.out, which == 0 ? 2 : 0), dq = arena.upload(o.dq, which == 1 ? 2 : 0),
                                dk = up(o.dk), dv = up(o.dv);
    const flashattn::Result r =
        flashattn::backward(up(p.q), up(p.k), up(p.v), out, up(p.dout), up(o.lse), dq, dk, dv, opt, std::nullopt);
    EXPECT_EQ(r.backend, Backend::cuda_sm90);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    fa_gpu::download(o.dq, dq);
    fa_gpu::download(o.dk, dk);
    fa_gpu::download(o.dv, dv);
    const Outputs ref = run_reference(p, true), naive = run_naive_low_precision(p, true);
    for (auto [what, f] : {std::pair{"dq", &Outputs::dq}, std::pair{"dk", &Outputs::dk}, std::pair{"dv", &Outputs::dv}}) {
      const std::vector<char> mask = p.valid_mask(what);
      const Verdict v = check(what, o.*f, ref.*f, &(naive.*f), c.dtype, &mask);
      EXPECT_TRUE(v.ok) << what << ": " << v;
    }
  }
}

}  // namespace
