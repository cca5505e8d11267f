// Edge cases every backend must get exactly right: empty batches, zero-length
// sequences, rows that see no key (O = 0, lse = -inf, zero gradients, never NaN),
// and an explicitly given softmax scale.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "support.hpp"

namespace fa_test {
namespace {

constexpr Backend kCpuBackends[] = {Backend::cpu_reference, Backend::cpu_flash};
constexpr DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};

// Flash and reference both meet the rule on this case; returns both outputs.
void both_match(const Case& c, Outputs* flash_out = nullptr, Outputs* ref_out = nullptr) {
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  Outputs ours = run(p, Backend::cpu_flash, true);
  Outputs ref = run_reference(p, true);
  Outputs naive;
  if (c.dtype != DType::f32) naive = run_naive_low_precision(p, true);
  for (const Verdict& v : check_outputs(p, ours, ref, c.dtype != DType::f32 ? &naive : nullptr, true))
    EXPECT_TRUE(v.ok) << v;
  if (flash_out) *flash_out = std::move(ours);
  if (ref_out) *ref_out = std::move(ref);
}

TEST(EdgeCases, EmptyBatch) {
  for (Backend b : kCpuBackends) {
    Case c;
    c.batch = 0;
    const Problem p = make_problem(c);
    Outputs o;
    EXPECT_NO_THROW(o = run(p, b, true)) << flashattn::backend_name(b);
    EXPECT_EQ(o.out.numel(), 0);
  }
  // Varlen with no sequences: cu_seqlens = {0}.
  for (Backend b : kCpuBackends) {
    Case c;
    c.varlen_q = {};
    c.varlen_k = {};
    HostTensor q = HostTensor::make(DType::f32, {0, 2, 16}), out = q;
    HostTensor lse = HostTensor::make(DType::f32, {2, 0});
    HostTensor cu = HostTensor::make(DType::i32, {1});
    cu.set(0, 0);
    flashattn::Options o;
    o.cu_seqlens_q = cu.view;
    o.cu_seqlens_k = cu.view;
    o.backend = b;
    EXPECT_NO_THROW(flashattn::forward(q.view, q.view, q.view, out.view, lse.view, o));
  }
}

// Every row of sequence `b` in [row_begin, row_end) of output `o` has O == 0
// exactly, lse == -inf exactly, dq == 0 exactly.
void expect_empty_rows(const Problem& p, const Outputs& o, int b, std::int64_t row_begin,
                       std::int64_t row_end, int h) {
  for (std::int64_t i = row_begin; i < row_end; ++i) {
    const float lse = p.c.varlen() ? o.lse.at({h, i}) : o.lse.at({b, h, i});
    EXPECT_TRUE(std::isinf(lse) && lse < 0) << "lse row " << i << " = " << lse;
    for (std::int64_t e = 0; e < p.c.head_dim; ++e) {
      const float out = p.c.varlen() ? o.out.at({i, h, e}) : o.out.at({b, i, h, e});
      const float dq = p.c.varlen() ? o.dq.at({i, h, e}) : o.dq.at({b, i, h, e});
      ASSERT_EQ(out, 0.0f) << "out row " << i << " dim " << e;
      ASSERT_EQ(dq, 0.0f) << "dq row " << i << " dim " << e;
    }
  }
}

TEST(EdgeCases, ZeroLengthKeys) {
  // seqlen_k = 0: no query row sees any key.
  for (DType dt : kDtypes)
    for (Backend b : kCpuBackends) {
      Case c;
      c.dtype = dt;
      c.seqlen_q = 9;
      c.seqlen_k = 0;
      const Problem p = make_problem(c);
      SCOPED_TRACE(p.describe() + " " + flashattn::backend_name(b));
      const Outputs o = run(p, b, true);
      for (int bb = 0; bb < c.batch; ++bb)
        for (int h = 0; h < c.heads_q; ++h) expect_empty_rows(p, o, bb, 0, c.seqlen_q, h);
    }
}

TEST(EdgeCases, ZeroLengthQueries) {
  for (Backend b : kCpuBackends) {
    Case c;
    c.seqlen_q = 0;
    c.seqlen_k = 12;
    const Problem p = make_problem(c);
    SCOPED_TRACE(p.describe());
    const Outputs o = run(p, b, true);
    // No query contributes: dK and dV are exactly zero (and must be written).
    for (std::int64_t i = 0; i < o.dk.numel(); ++i) {
      ASSERT_EQ(o.dk.get(i), 0.0f) << flashattn::backend_name(b) << " dk " << i;
      ASSERT_EQ(o.dv.get(i), 0.0f) << flashattn::backend_name(b) << " dv " << i;
    }
  }
}

TEST(EdgeCases, VarlenZeroLengthSequences) {
  for (DType dt : kDtypes) {
    Case c;
    c.dtype = dt;
    c.varlen_q = {0, 6, 4, 0, 3};
    c.varlen_k = {5, 0, 7, 0, 2};
    Outputs ours, ref;
    both_match(c, &ours, &ref);
    const Problem p = make_problem(c);
    // Sequence 1 has queries but no keys: its rows are empty in both backends.
    const Outputs o = run(p, Backend::cpu_flash, true);
    for (int h = 0; h < c.heads_q; ++h) expect_empty_rows(p, o, 1, 0, 6, h);
    // Sequence 0 has keys but no queries: zero dK/dV rows 0..4.
    for (std::int64_t i = 0; i < 5 * c.heads_kv * c.head_dim; ++i) {
      ASSERT_EQ(o.dk.get(i), 0.0f);
      ASSERT_EQ(o.dv.get(i), 0.0f);
    }
  }
}

TEST(EdgeCases, BottomRightCausalWithMoreQueriesThanKeys) {
  // Sq > Sk bottom-right: query i sees keys j <= i - (Sq - Sk); the first Sq - Sk rows see none.
  for (DType dt : kDtypes)
    for (Backend b : kCpuBackends) {
      Case c;
      c.dtype = dt;
      c.seqlen_q = 30;
      c.seqlen_k = 11;
      c.causal = true;
      const Problem p = make_problem(c);
      SCOPED_TRACE(p.describe() + " " + flashattn::backend_name(b));
      const Outputs o = run(p, b, true);
      for (int bb = 0; bb < c.batch; ++bb)
        for (int h = 0; h < c.heads_q; ++h) expect_empty_rows(p, o, bb, 0, 19, h);
      for (const HostTensor* t : {&o.out, &o.lse, &o.dq, &o.dk, &o.dv})
        for (std::int64_t i = 0; i < t->numel(); ++i) ASSERT_FALSE(std::isnan(t->get(i))) << i;
    }
  Case c;
  c.seqlen_q = 30;
  c.seqlen_k = 11;
  c.causal = true;
  both_match(c);
}

TEST(EdgeCases, WindowThatHidesEveryKeyOfSomeRows) {
  // Top-left, window (0, 0): row i sees only key i; rows i >= Sk see nothing.
  for (Backend b : kCpuBackends) {
    Case c;
    c.seqlen_q = 20;
    c.seqlen_k = 8;
    c.alignment = Alignment::top_left;
    c.window_left = 0;
    c.window_right = 0;
    const Problem p = make_problem(c);
    const Outputs o = run(p, b, true);
    for (int bb = 0; bb < c.batch; ++bb)
      for (int h = 0; h < c.heads_q; ++h) expect_empty_rows(p, o, bb, 8, 20, h);
  }
}

TEST(EdgeCases, FullyMaskedByInfiniteBias) {
  // A bias of -inf is a mask; a row whose every score is -inf is an empty row.
  for (Backend b : kCpuBackends) {
    Case c;
    c.seqlen_q = 6;
    c.seqlen_k = 10;
    c.bias = BiasKind::bcast_batch;
    c.bias_f32 = true;
    Problem p = make_problem(c);
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int h = 0; h < c.heads_q; ++h) {
      for (int j = 0; j < 10; ++j) p.bias.set(((h * 6) + 2) * 10 + j, ninf);  // row 2: all -inf
      for (int j = 0; j < 10; j += 2) p.bias.set(((h * 6) + 4) * 10 + j, ninf);  // row 4: half
    }
    SCOPED_TRACE(p.describe() + " " + flashattn::backend_name(b));
    const Outputs o = run(p, b, true);
    for (int bb = 0; bb < c.batch; ++bb)
      for (int h = 0; h < c.heads_q; ++h) expect_empty_rows(p, o, bb, 2, 3, h);
    for (const HostTensor* t : {&o.out, &o.dq, &o.dk, &o.dv})
      for (std::int64_t i = 0; i < t->numel(); ++i) ASSERT_TRUE(std::isfinite(t->get(i))) << i;
    if (b == Backend::cpu_flash) {
      const Outputs ref = run_reference(p, true);
      for (const Verdict& v : check_outputs(p, o, ref, nullptr, true)) EXPECT_TRUE(v.ok) << v;
    }
  }
}

TEST(EdgeCases, ExplicitScale) {
  // An explicit scale is used as given: scale s on q equals the default scale on q * (s / default).
  // Choosing s = 4/sqrt(d) makes the factor 4, exact in every dtype.
  for (DType dt : kDtypes) {
    Case c;
    c.dtype = dt;
    c.head_dim = 16;
    c.scale = 1.0f;  // = 4 / sqrt(16)
    Problem p = make_problem(c);
    SCOPED_TRACE(p.describe());
    const Outputs given = run(p, Backend::cpu_flash, false);
    Problem scaled = p;
    scaled.c.scale.reset();
    for (std::int64_t i = 0; i < scaled.q.numel(); ++i) scaled.q.set(i, p.q.get(i) * 4.0f);
    const Outputs implied = run(scaled, Backend::cpu_flash, false);
    const double tol = dt == DType::f32 ? 1e-5 : 1e-2;
    for (std::int64_t i = 0; i < given.out.numel(); ++i)
      ASSERT_NEAR(given.out.get(i), implied.out.get(i), tol) << i;
    // And it differs from the default scale (the option is not ignored).
    Problem deflt = p;
    deflt.c.scale.reset();
    const Outputs d = run(deflt, Backend::cpu_flash, false);
    double diff = 0;
    for (std::int64_t i = 0; i < d.out.numel(); ++i) diff = std::max(diff, double(std::fabs(d.out.get(i) - given.out.get(i))));
    EXPECT_GT(diff, 0.05);
  }
  Case c;
  c.scale = 0.01f;
  both_match(c);
  c.scale = 3.0f;
  both_match(c);
}

TEST(EdgeCases, DeterministicBackwardIsBitwiseReproducible) {
  Case c;
  c.seqlen_q = 70;
  c.seqlen_k = 90;
  c.heads_q = 4;
  c.heads_kv = 1;  // dK/dV summed over a group: where order-dependent sums would show
  c.bias = BiasKind::bcast_both;
  c.bias_grad = true;
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  auto once = [&] {
    Outputs o = alloc_outputs(p, true);
    flashattn::Options opt = p.options(Backend::cpu_flash);
    opt.deterministic = true;
    flashattn::forward(p.q.view, p.k.view, p.v.view, o.out.view, o.lse.view, opt);
    flashattn::backward(p.q.view, p.k.view, p.v.view, o.out.view, p.dout.view, o.lse.view, o.dq.view, o.dk.view,
                        o.dv.view, opt, o.dbias.view);
    return o;
  };
  const Outputs a = once();
  for (int rep = 0; rep < 3; ++rep) {
    const Outputs b = once();
    for (auto f : {&Outputs::dq, &Outputs::dk, &Outputs::dv, &Outputs::dbias})
      ASSERT_EQ(0, std::memcmp((a.*f).data(), (b.*f).data(), (a.*f).storage_bytes())) << "run " << rep;
  }
}

TEST(EdgeCases, SingleThreadMatchesReference) {
  Case c;
  c.seqlen_q = 40;
  c.seqlen_k = 33;
  c.causal = true;
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  Outputs o = alloc_outputs(p, true);
  flashattn::Options opt = p.options(Backend::cpu_flash);
  opt.num_threads = 1;
  flashattn::forward(p.q.view, p.k.view, p.v.view, o.out.view, o.lse.view, opt);
  flashattn::backward(p.q.view, p.k.view, p.v.view, o.out.view, p.dout.view, o.lse.view, o.dq.view, o.dk.view,
                      o.dv.view, opt);
  const Outputs ref = run_reference(p, true);
  for (const Verdict& v : check_outputs(p, o, ref, nullptr, true)) EXPECT_TRUE(v.ok) << v;
}

TEST(EdgeCases, AutomaticBackendOnCpuIsFlash) {
  Case c;
  const Problem p = make_problem(c);
  Outputs o = alloc_outputs(p, false);
  const flashattn::Result r =
      flashattn::forward(p.q.view, p.k.view, p.v.view, o.out.view, o.lse.view, p.options(Backend::automatic));
  EXPECT_EQ(r.backend, Backend::cpu_flash);
  EXPECT_TRUE(flashattn::backend_available(Backend::cpu_flash));
  EXPECT_TRUE(flashattn::backend_available(Backend::cpu_reference));
}

}  // namespace
}  // namespace fa_test
