// The CUDA backward kernels (portable, sm80) forced through Options::backend on
// every feature, dtype, head dim and odd size, against the CPU fp64 reference
// backward with the one tolerance rule; gradient buffers poisoned with NaN; and
// deterministic mode: two runs bitwise equal. The helpers and the feature list are
// shared with test_sm90_backward.cpp (backward_support.hpp).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "backward_support.hpp"

namespace {

using namespace fa_test;
using flashattn::TensorView;

struct Param {
  Backend backend;
  Case c;
};

std::vector<Param> params() {
  std::vector<Param> v;
  for (Backend b : {Backend::cuda_portable, Backend::cuda_sm80})
    for (const Case& c : fa_gpu::backward_feature_cases()) {
      if (b == Backend::cuda_sm80 && c.dtype == DType::f32) continue;  // sm80 takes fp16/bf16 only
      v.push_back({b, c});
    }
  return v;
}

class Backward : public ::testing::TestWithParam<Param> {};

TEST_P(Backward, MatchesReference) {
  FA_SKIP_WITHOUT_GPU(GetParam().backend == Backend::cuda_sm80 ? 80 : 75);
  fa_gpu::expect_backward_matches(GetParam().c, GetParam().backend, false);
}

TEST_P(Backward, DeterministicMatchesReference) {
  FA_SKIP_WITHOUT_GPU(GetParam().backend == Backend::cuda_sm80 ? 80 : 75);
  const Case& c = GetParam().c;
  // The deterministic passes on the feature-heavy subset keep the suite short.
  if (c.bias == BiasKind::none && c.heads_q == c.heads_kv && !c.varlen() && !c.causal)
    GTEST_SKIP() << "covered by the non-deterministic run";
  fa_gpu::expect_backward_matches(c, GetParam().backend, true);
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
  for (bool det : {false, true}) fa_gpu::expect_backward_matches(c, Backend::cuda_sm80, det, 2);
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
    if (const std::string why = fa_gpu::backward_unsupported(p, GetParam()); !why.empty()) GTEST_SKIP() << why;
    const fa_gpu::GpuGrads a = fa_gpu::run_backward(p, GetParam(), true), b = fa_gpu::run_backward(p, GetParam(), true);
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
