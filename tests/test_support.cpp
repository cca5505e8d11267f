// The test support itself: layouts, poison, the naive baseline and the rule.
// If these were wrong every other test could pass vacuously.
#include <gtest/gtest.h>

#include <cmath>

#include "support.hpp"

namespace fa_test {
namespace {

TEST(Support, PermutedLayoutKeepsLogicalOrder) {
  HostTensor a = HostTensor::make(DType::f32, {2, 3, 4, 5});                 // bshd
  HostTensor b = HostTensor::make(DType::f32, {2, 3, 4, 5}, {0, 2, 1, 3});   // stored bhsd
  EXPECT_EQ(b.view.strides[3], 1);
  EXPECT_EQ(b.view.strides[1], 5);    // seqlen stride = dim
  EXPECT_EQ(b.view.strides[2], 15);   // head stride = seqlen*dim
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    a.set(i, float(i));
    b.set(i, float(i));
  }
  EXPECT_EQ(a.to_float_vector(), b.to_float_vector());
  EXPECT_EQ(b.at({1, 2, 3, 4}), float(a.numel() - 1));
  HostTensor c = b;  // copies rebase the view onto the copy's storage
  EXPECT_NE(c.view.data, b.view.data);
  EXPECT_EQ(c.to_float_vector(), b.to_float_vector());
}

TEST(Support, PoisonIsNaNInEveryDtype) {
  for (DType t : {DType::f32, DType::f16, DType::bf16}) {
    HostTensor a = HostTensor::make(t, {3, 4}, {}, 2);
    a.set(0, 1.0f);
    a.poison();
    for (std::int64_t i = 0; i < a.numel(); ++i) EXPECT_TRUE(std::isnan(a.get(i)));
  }
}

TEST(Support, CheckFailsOnWrongValuesAndNaN) {
  HostTensor ref = HostTensor::make(DType::f32, {8});
  for (int i = 0; i < 8; ++i) ref.set(i, float(i) - 3.5f);
  HostTensor ours = ref;
  EXPECT_TRUE(check("x", ours, ref, nullptr, DType::f32).ok);
  ours.set(3, ref.get(3) + 1e-2f);
  EXPECT_FALSE(check("x", ours, ref, nullptr, DType::f32).ok);
  ours = ref;
  ours.set(5, NAN);
  Verdict v = check("x", ours, ref, nullptr, DType::f32);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.bad_nan, 1);
  // A masked-out element is not compared.
  std::vector<char> mask(8, 1);
  mask[5] = 0;
  EXPECT_TRUE(check("x", ours, ref, nullptr, DType::f32, &mask).ok);
  // -inf must match exactly.
  ref.set(2, -INFINITY);
  ours = ref;
  EXPECT_TRUE(check("lse", ours, ref, nullptr, DType::f32).ok);
  ours.set(2, -1e30f);
  EXPECT_FALSE(check("lse", ours, ref, nullptr, DType::f32).ok);
}

TEST(Support, LowPrecisionRuleUsesNaiveError) {
  HostTensor ref = HostTensor::make(DType::f32, {4});
  for (int i = 0; i < 4; ++i) ref.set(i, 1.0f + 0.1f * float(i));
  HostTensor naive = HostTensor::make(DType::f16, {4});
  for (int i = 0; i < 4; ++i) naive.set(i, ref.get(i) + 0.01f);
  HostTensor ours = HostTensor::make(DType::f16, {4});
  for (int i = 0; i < 4; ++i) ours.set(i, ref.get(i) + 0.015f);
  EXPECT_TRUE(check("out", ours, ref, &naive, DType::f16).ok);  // 0.015 <= 2*0.01 + 2ulp
  ours.set(1, ref.get(1) + 0.05f);
  EXPECT_FALSE(check("out", ours, ref, &naive, DType::f16).ok);
}

TEST(Support, NaiveLowPrecisionIsCloseButNotExact) {
  // The naive same-precision result must be a sensible yardstick: close to the
  // reference (so the rule is strict), not identical (so it is not vacuous).
  for (DType dt : {DType::f16, DType::bf16}) {
    Case c;
    c.dtype = dt;
    c.seqlen_q = 33;
    c.seqlen_k = 40;
    c.causal = true;
    c.bias = BiasKind::bcast_heads;
    c.bias_grad = true;
    c.softcap = 5.0f;
    Problem p = make_problem(c);
    SCOPED_TRACE(p.describe());
    Outputs ref = run_reference(p, true);
    Outputs naive = run_naive_low_precision(p, true);
    for (auto field : {&Outputs::out, &Outputs::dq, &Outputs::dk, &Outputs::dv, &Outputs::dbias}) {
      const Verdict v = check("naive", naive.*field, ref.*field, &(naive.*field), dt);
      EXPECT_TRUE(v.ok) << v;
      EXPECT_GT(v.naive_err, 0.0);
      EXPECT_LT(v.naive_err, (dt == DType::f16 ? 0.02 : 0.15) * std::max(1.0, v.max_ref)) << v;
    }
  }
}

TEST(Support, NaiveFp32MatchesReference) {
  // In fp32 the naive path is plain fp32 math: it must meet the fp32 rule, which
  // cross-checks its masking, bias, ALiBi, GQA and varlen indexing.
  Case c;
  c.varlen_q = {5, 0, 17};
  c.varlen_k = {9, 3, 12};
  c.varlen_pad_rows = 2;
  c.heads_q = 4;
  c.heads_kv = 2;
  c.window_left = 3;
  c.causal = true;
  c.alibi = AlibiKind::per_batch_head;
  c.bias = BiasKind::full;
  c.bias_grad = true;
  c.layout = Layout::bhsd;
  Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  Outputs ref = run_reference(p, true);
  Outputs naive = run_naive_low_precision(p, true);
  for (const Verdict& v : check_outputs(p, naive, ref, nullptr, true)) EXPECT_TRUE(v.ok) << v;
}

}  // namespace
}  // namespace fa_test
