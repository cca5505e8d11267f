// The reference backward against central finite differences of the reference
// forward. With L = sum(dO * O), dL/dx for x in q, k, v, bias is what backward
// returns; (L(x + h) - L(x - h)) / 2h estimates it.
//
// Tolerance: the forward computes in fp64 but stores O in fp32, so each L carries
// a rounding noise of about sqrt(#O) * 2^-24 * |O| ~ 1e-6 here; divided by 2h
// (h = 2^-6) that is ~1e-4. The truncation error is h^2/6 * |L'''| ~ 1e-4 for
// O(1) third derivatives; measured worst |fd - analytic| over 3 seeds of the
// softcap/bias/GQA case: 5e-5. |fd - analytic| <= 5e-4 + 5e-4 * |analytic| keeps a
// ~10x margin, while any real mistake (a missing softcap derivative, a wrong
// scale, a dropped mask) moves gradients by O(0.1).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support.hpp"

namespace fa_test {
namespace {

double loss(const Problem& p) {
  const Outputs o = run(p, Backend::cpu_reference, false);
  double l = 0;
  for (std::int64_t i = 0; i < o.out.numel(); ++i) {
    if (std::isnan(p.dout.get(i))) continue;  // varlen padding rows
    l += double(p.dout.get(i)) * double(o.out.get(i));
  }
  return l;
}

// Checks `samples` random elements of input `which` against the gradient `grad`.
void check_input(Problem& p, HostTensor Problem::*which, const HostTensor& grad, const char* name,
                 int samples, std::mt19937_64& rng) {
  HostTensor& x = p.*which;
  std::uniform_int_distribution<std::int64_t> pick(0, x.numel() - 1);
  const float h = 1.0f / 64;  // a power of two: x +- h is exact for |x| < 2^18 * h
  int done = 0;
  for (int tries = 0; done < samples && tries < samples * 20; ++tries) {
    const std::int64_t i = pick(rng);
    const float x0 = x.get(i);
    if (std::isnan(x0)) continue;  // padding
    x.set(i, x0 + h);
    const double lp = loss(p);
    x.set(i, x0 - h);
    const double lm = loss(p);
    x.set(i, x0);
    const double fd = (lp - lm) / (2.0 * double(h));
    const double an = grad.get(i);
    EXPECT_NEAR(fd, an, 5e-4 + 5e-4 * std::fabs(an)) << name << " element " << i;
    ++done;
  }
  EXPECT_EQ(done, samples) << name;
}

void check_case(const Case& c, int samples = 12) {
  Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  const Outputs g = run(p, Backend::cpu_reference, true);
  std::mt19937_64 rng(p.seed ^ 0x5eed);
  check_input(p, &Problem::q, g.dq, "dq", samples, rng);
  check_input(p, &Problem::k, g.dk, "dk", samples, rng);
  check_input(p, &Problem::v, g.dv, "dv", samples, rng);
  if (c.bias_grad) check_input(p, &Problem::bias, g.dbias, "dbias", samples, rng);
}

Case small() {
  Case c;
  c.batch = 2;
  c.seqlen_q = 6;
  c.seqlen_k = 9;
  c.heads_q = 2;
  c.heads_kv = 2;
  c.head_dim = 5;
  return c;
}

TEST(FiniteDifferences, Plain) { check_case(small()); }

TEST(FiniteDifferences, CausalSoftcapFullBiasGqa) {
  Case c = small();
  c.causal = true;
  c.softcap = 2.0f;
  c.bias = BiasKind::full;
  c.bias_grad = true;
  c.heads_q = 4;
  c.heads_kv = 2;
  check_case(c);
}

TEST(FiniteDifferences, BroadcastBiasAlibiWindow) {
  Case c = small();
  c.bias = BiasKind::bcast_both;  // dbias sums over batch and heads
  c.bias_grad = true;
  c.alibi = AlibiKind::per_batch_head;
  c.window_left = 2;
  c.window_right = 1;
  c.alignment = Alignment::top_left;
  c.scale = 0.7f;
  check_case(c);
}

TEST(FiniteDifferences, VarlenMqaBiasBroadcastHeads) {
  Case c = small();
  c.varlen_q = {4, 0, 5};
  c.varlen_k = {6, 3, 2};
  c.varlen_pad_rows = 1;
  c.heads_q = 3;
  c.heads_kv = 1;
  c.causal = true;
  c.bias = BiasKind::bcast_heads;
  c.bias_grad = true;
  c.layout = Layout::bhsd;
  check_case(c);
}

}  // namespace
}  // namespace fa_test
