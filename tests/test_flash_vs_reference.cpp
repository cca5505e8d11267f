// cpu_flash against the fp64 reference on fresh random inputs: odd sizes, every
// option and their combinations, each dtype and layout, forward and backward.
// fp16/bf16 results are judged by flash_attn's rule (support/check.cpp).
#include <gtest/gtest.h>

#include <set>

#include "support.hpp"

namespace fa_test {
namespace {

constexpr DType kDtypes[] = {DType::f32, DType::f16, DType::bf16};

struct Param {
  Case c;
  bool backward = true;
  std::string name;
};

void PrintTo(const Param& p, std::ostream* os) { *os << p.name; }

// Runs one case through cpu_flash and the reference and applies the rule.
void run_and_check(const Case& c, bool backward) {
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  const Outputs ours = run(p, Backend::cpu_flash, backward);
  const Outputs ref = run_reference(p, backward);
  Outputs naive;
  const bool low = c.dtype != DType::f32;
  if (low) naive = run_naive_low_precision(p, backward);
  for (const Verdict& v : check_outputs(p, ours, ref, low ? &naive : nullptr, backward))
    EXPECT_TRUE(v.ok) << v;
}

class FlashVsReference : public ::testing::TestWithParam<Param> {};

TEST_P(FlashVsReference, Matches) { run_and_check(GetParam().c, GetParam().backward); }

// ---------------------------------------------------------------------------
// The case lists. Sizes keep the fp64 reference (O(Sq*Sk*d) per head) fast.

Case base(DType dt, Layout layout, std::int64_t sq, std::int64_t sk, int d) {
  Case c;
  c.dtype = dt;
  c.layout = layout;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.head_dim = d;
  return c;
}

std::vector<Param> size_cases() {
  struct S {
    std::int64_t sq, sk;
    int d;
  };
  // seqlen 1/17/odd, Sq<Sk and Sq>Sk, head dims 1, 7, 64, 80, 256.
  const S sizes[] = {{1, 1, 1}, {1, 17, 7}, {17, 1, 64}, {17, 17, 80}, {17, 33, 256},
                     {33, 17, 7}, {5, 130, 64}, {130, 5, 1}, {64, 64, 32}};
  std::vector<Param> r;
  int n = 0;
  for (DType dt : kDtypes)
    for (const S& s : sizes) {
      Case c = base(dt, n++ % 2 ? Layout::bhsd : Layout::bshd, s.sq, s.sk, s.d);
      r.push_back({c, true, {}});
    }
  // Long sequences in a few cases only (the reference is quadratic).
  {
    Case c = base(DType::f32, Layout::bshd, 1000, 1000, 64);
    c.batch = 1;
    c.heads_q = 2;
    c.heads_kv = 1;
    c.causal = true;
    r.push_back({c, true, {}});
  }
  {
    Case c = base(DType::bf16, Layout::bhsd, 1000, 1000, 80);
    c.batch = 1;
    c.heads_q = 1;
    c.heads_kv = 1;
    r.push_back({c, false, {}});
  }
  {
    Case c = base(DType::f16, Layout::bshd, 1, 1000, 128);  // decode-like
    c.heads_q = 4;
    c.heads_kv = 1;
    r.push_back({c, true, {}});
  }
  {
    Case c = base(DType::f32, Layout::padded, 1000, 31, 7);
    c.batch = 1;
    r.push_back({c, true, {}});
  }
  return r;
}

std::vector<Param> option_cases() {
  std::vector<Param> r;
  int n = 0;
  // Each option runs in every dtype, the layout rotating so every option meets
  // every layout somewhere.
  auto add = [&](Case c) {
    const Layout layouts[] = {Layout::bshd, Layout::bhsd, Layout::padded};
    for (int i = 0; i < 3; ++i) {
      c.dtype = kDtypes[i];
      c.layout = layouts[(n + i) % 3];
      r.push_back({c, true, {}});
    }
    ++n;
  };
  auto shape = [](std::int64_t sq, std::int64_t sk, int d = 32) {
    Case c;
    c.seqlen_q = sq;
    c.seqlen_k = sk;
    c.head_dim = d;
    return c;
  };

  // Causal, both alignments, Sq < Sk, Sq > Sk (rows with no visible key) and equal.
  for (Alignment a : {Alignment::bottom_right, Alignment::top_left})
    for (auto [sq, sk] : {std::pair{23, 41}, std::pair{41, 23}, std::pair{37, 37}}) {
      Case c = shape(sq, sk);
      c.causal = true;
      c.alignment = a;
      add(c);
    }
  // Sliding windows, including the degenerate (0, 0) and one-sided ones.
  for (auto [wl, wr] : {std::pair{4, 2}, std::pair{0, 0}, std::pair{-1, 3}, std::pair{5, -1}}) {
    Case c = shape(29, 45);
    c.window_left = wl;
    c.window_right = wr;
    add(c);
  }
  {
    Case c = shape(45, 29);  // top-left window with Sq > Sk
    c.window_left = 3;
    c.window_right = 6;
    c.alignment = Alignment::top_left;
    add(c);
  }
  {
    Case c = shape(40, 40);  // local causal
    c.causal = true;
    c.window_left = 8;
    add(c);
  }
  {
    Case c = shape(31, 47);
    c.softcap = 3.0f;
    add(c);
  }
  {
    Case c = shape(19, 21, 16);
    c.scale = 0.9f;  // explicit, larger than 1/sqrt(d)
    add(c);
  }
  // Bias: every broadcast form, with and without its gradient.
  for (BiasKind b : {BiasKind::full, BiasKind::bcast_batch, BiasKind::bcast_heads, BiasKind::bcast_both})
    for (bool grad : {false, true}) {
      Case c = shape(21, 35);
      c.heads_q = 3;
      c.heads_kv = 3;
      c.bias = b;
      c.bias_grad = grad;
      add(c);
    }
  {
    Case c = shape(26, 18);  // fp32 bias with fp16/bf16 q
    c.bias = BiasKind::bcast_batch;
    c.bias_f32 = true;
    c.bias_grad = true;
    add(c);
  }
  // ALiBi both shapes, alone and with causal.
  for (AlibiKind a : {AlibiKind::per_head, AlibiKind::per_batch_head})
    for (bool causal : {false, true}) {
      Case c = shape(27, 39);
      c.heads_q = 4;
      c.heads_kv = 4;
      c.alibi = a;
      c.causal = causal;
      add(c);
    }
  // GQA and MQA.
  for (int hkv : {2, 1}) {
    Case c = shape(25, 33, 40);
    c.heads_q = 6;
    c.heads_kv = hkv;
    add(c);
  }
  // Varlen: empty q sequences, empty k sequences (rows with no key), padding rows.
  {
    Case c = shape(0, 0);
    c.varlen_q = {13, 0, 30, 1, 7};
    c.varlen_k = {20, 9, 30, 0, 3};
    c.varlen_pad_rows = 3;
    c.heads_q = 4;
    c.heads_kv = 2;
    add(c);
  }
  {
    Case c = shape(0, 0);
    c.varlen_q = {40, 0, 17};
    c.varlen_k = {25, 0, 33};
    c.causal = true;
    add(c);
  }
  // Combinations.
  {
    Case c = shape(33, 51, 48);
    c.causal = true;
    c.window_left = 10;
    c.softcap = 4.0f;
    c.bias = BiasKind::bcast_heads;
    c.bias_grad = true;
    c.alibi = AlibiKind::per_head;
    c.heads_q = 4;
    c.heads_kv = 2;
    add(c);
  }
  {
    Case c = shape(0, 0, 24);
    c.varlen_q = {17, 0, 29, 5};
    c.varlen_k = {31, 4, 11, 0};
    c.varlen_pad_rows = 2;
    c.causal = true;
    c.alignment = Alignment::top_left;
    c.softcap = 6.0f;
    c.bias = BiasKind::full;
    c.bias_grad = true;
    c.alibi = AlibiKind::per_batch_head;
    c.heads_q = 4;
    c.heads_kv = 1;
    add(c);
  }
  {
    Case c = shape(0, 0, 40);  // varlen, bottom-right with Sq > Sk in some sequences
    c.varlen_q = {30, 12, 0, 9};
    c.varlen_k = {11, 25, 6, 9};
    c.causal = true;
    c.window_left = 5;
    c.alibi = AlibiKind::per_head;
    c.bias = BiasKind::bcast_batch;
    c.bias_grad = true;
    c.heads_q = 4;
    c.heads_kv = 2;
    add(c);
  }
  {
    Case c = shape(50, 20, 72);
    c.window_left = 2;
    c.window_right = 7;
    c.bias = BiasKind::bcast_both;
    c.bias_grad = true;
    c.scale = 0.05f;
    c.heads_q = 2;
    c.heads_kv = 1;
    add(c);
  }
  {
    Case c = shape(45, 70, 96);
    c.causal = true;
    c.alignment = Alignment::top_left;
    c.softcap = 2.0f;
    c.alibi = AlibiKind::per_batch_head;
    add(c);
  }
  return r;
}

// Unique gtest names ("dtype_layout_sizes_options"), suffixed when two cases coincide.
std::vector<Param> named(std::vector<Param> v) {
  std::set<std::string> seen;
  for (Param& p : v) {
    std::string n = p.c.name() + (p.backward ? "" : "_fwd");
    std::string u = n;
    for (int i = 2; seen.count(u); ++i) u = n + "_" + std::to_string(i);
    seen.insert(u);
    p.name = u;
  }
  return v;
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Sizes, FlashVsReference, ::testing::ValuesIn(named(size_cases())), param_name);
INSTANTIATE_TEST_SUITE_P(Options, FlashVsReference, ::testing::ValuesIn(named(option_cases())), param_name);

// Batching must not change results: a batch of B equals B runs of one sequence,
// here in varlen form against the same rows run one sequence at a time.
TEST(FlashConsistency, VarlenEqualsSequenceBySequence) {
  Case c;
  c.varlen_q = {9, 14, 0, 21};
  c.varlen_k = {12, 3, 7, 21};
  c.causal = true;
  c.heads_q = 2;
  c.heads_kv = 1;
  const Problem p = make_problem(c);
  SCOPED_TRACE(p.describe());
  const Outputs all = run(p, Backend::cpu_flash, false);
  for (int b = 0; b < p.batch; ++b) {
    const std::int64_t q0 = std::int64_t(p.cu_q.get(b)), k0 = std::int64_t(p.cu_k.get(b));
    Case one = c;
    one.varlen_q = {c.varlen_q[std::size_t(b)]};
    one.varlen_k = {c.varlen_k[std::size_t(b)]};
    Problem s = make_problem(one);
    // Copy this sequence's rows into the single-sequence problem.
    auto copy_rows = [](const HostTensor& from, std::int64_t row0, HostTensor& to) {
      const std::int64_t per = to.size(1) * to.size(2);
      for (std::int64_t i = 0; i < to.numel(); ++i) to.set(i, from.get(row0 * per + i));
    };
    copy_rows(p.q, q0, s.q);
    copy_rows(p.k, k0, s.k);
    copy_rows(p.v, k0, s.v);
    const Outputs single = run(s, Backend::cpu_flash, false);
    const std::int64_t per = c.heads_q * c.head_dim;
    // Same rows, same keys: only summation order may differ (fp32 rule's rtol).
    for (std::int64_t i = 0; i < single.out.numel(); ++i)
      ASSERT_NEAR(single.out.get(i), all.out.get(q0 * per + i), 1e-5) << "sequence " << b << " element " << i;
  }
}

}  // namespace
}  // namespace fa_test
