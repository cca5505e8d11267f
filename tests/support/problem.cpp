// Cases, random problems, and running them through the public API.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <random>
#include <sstream>
#include <stdexcept>

#include "support.hpp"

namespace fa_test {

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::bshd: return "bshd";
    case Layout::bhsd: return "bhsd";
    case Layout::padded: return "padded";
  }
  return "?";
}
const char* bias_name(BiasKind b) {
  switch (b) {
    case BiasKind::none: return "none";
    case BiasKind::full: return "full";
    case BiasKind::bcast_batch: return "bcastB";
    case BiasKind::bcast_heads: return "bcastH";
    case BiasKind::bcast_both: return "bcastBH";
  }
  return "?";
}
const char* alibi_name(AlibiKind a) {
  switch (a) {
    case AlibiKind::none: return "none";
    case AlibiKind::per_head: return "H";
    case AlibiKind::per_batch_head: return "BH";
  }
  return "?";
}

namespace {
const char* dtype_short(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
  }
  return "?";
}
// gtest names allow only [A-Za-z0-9_]: negative numbers and decimals are spelled out.
std::string num(double x) {
  std::ostringstream s;
  s << x;
  std::string r;
  for (char ch : s.str()) r += ch == '-' ? 'm' : ch == '.' ? 'p' : ch;
  return r;
}
}  // namespace

std::string Case::name() const {
  std::ostringstream s;
  s << dtype_short(dtype) << '_' << layout_name(layout);
  if (varlen()) {
    s << "_varlen";
    for (std::size_t i = 0; i < varlen_q.size(); ++i) s << '_' << varlen_q[i] << 'x' << varlen_k[i];
    if (varlen_pad_rows) s << "_pad" << varlen_pad_rows;
  } else {
    s << "_b" << batch << "_q" << seqlen_q << "_k" << seqlen_k;
  }
  s << "_h" << heads_q;
  if (heads_kv != heads_q) s << "kv" << heads_kv;
  s << "_d" << head_dim;
  if (causal) s << (alignment == Alignment::bottom_right ? "_causalBR" : "_causalTL");
  else if (alignment == Alignment::top_left) s << "_TL";
  if (window_left >= 0 || window_right >= 0) s << "_win" << num(window_left) << '_' << num(window_right);
  if (softcap > 0) s << "_cap" << num(softcap);
  if (scale) s << "_scale" << num(*scale);
  if (bias != BiasKind::none) {
    s << "_bias" << bias_name(bias);
    if (bias_f32 && dtype != DType::f32) s << "f32";
    if (bias_grad) s << "_dbias";
  }
  if (alibi != AlibiKind::none) s << "_alibi" << alibi_name(alibi);
  return s.str();
}

namespace {

std::uint64_t pick_seed(const Case& c) {
  if (c.seed) return *c.seed;
  if (const char* env = std::getenv("FLASHATTN_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  static std::atomic<std::uint64_t> counter{0};
  std::random_device rd;
  return (std::uint64_t(rd()) << 32) ^ rd() ^ (counter++ * 0x9e3779b97f4a7c15ull);
}

// Memory order and padding of a q/k/v-like operand under `layout`.
HostTensor make_operand(DType dt, Layout layout, bool varlen, std::vector<std::int64_t> shape) {
  std::vector<int> order;
  std::int64_t pad = 0;
  if (layout == Layout::bhsd) order = varlen ? std::vector<int>{1, 0, 2} : std::vector<int>{0, 2, 1, 3};
  if (layout == Layout::padded) pad = 3;
  return HostTensor::make(dt, std::move(shape), std::move(order), pad);
}

void fill_normal(HostTensor& t, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> n(0.0f, stddev);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.set(i, n(rng));
}

}  // namespace

Problem make_problem(const Case& c) {
  Problem p;
  p.c = c;
  p.seed = pick_seed(c);
  std::mt19937_64 rng(p.seed);
  const bool varlen = c.varlen();
  if (varlen) {
    if (c.varlen_k.size() != c.varlen_q.size())
      throw std::invalid_argument("Case: varlen_q and varlen_k differ in length");
    p.batch = int(c.varlen_q.size());
    p.cu_q = HostTensor::make(DType::i32, {p.batch + 1});
    p.cu_k = HostTensor::make(DType::i32, {p.batch + 1});
    std::int64_t tq = 0, tk = 0;
    p.cu_q.set(0, 0);
    p.cu_k.set(0, 0);
    for (int b = 0; b < p.batch; ++b) {
      tq += c.varlen_q[std::size_t(b)];
      tk += c.varlen_k[std::size_t(b)];
      p.cu_q.set(b + 1, float(tq));
      p.cu_k.set(b + 1, float(tk));
      p.max_seqlen_q = std::max<std::int64_t>(p.max_seqlen_q, c.varlen_q[std::size_t(b)]);
      p.max_seqlen_k = std::max<std::int64_t>(p.max_seqlen_k, c.varlen_k[std::size_t(b)]);
    }
    p.total_q = tq + c.varlen_pad_rows;
    p.total_k = tk + c.varlen_pad_rows;
    p.q = make_operand(c.dtype, c.layout, true, {p.total_q, c.heads_q, c.head_dim});
    p.k = make_operand(c.dtype, c.layout, true, {p.total_k, c.heads_kv, c.head_dim});
    p.v = make_operand(c.dtype, c.layout, true, {p.total_k, c.heads_kv, c.head_dim});
    p.dout = make_operand(c.dtype, c.layout, true, {p.total_q, c.heads_q, c.head_dim});
  } else {
    p.batch = c.batch;
    p.max_seqlen_q = c.seqlen_q;
    p.max_seqlen_k = c.seqlen_k;
    p.total_q = c.batch * c.seqlen_q;
    p.total_k = c.batch * c.seqlen_k;
    p.q = make_operand(c.dtype, c.layout, false, {c.batch, c.seqlen_q, c.heads_q, c.head_dim});
    p.k = make_operand(c.dtype, c.layout, false, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
    p.v = make_operand(c.dtype, c.layout, false, {c.batch, c.seqlen_k, c.heads_kv, c.head_dim});
    p.dout = make_operand(c.dtype, c.layout, false, {c.batch, c.seqlen_q, c.heads_q, c.head_dim});
  }
  // Unit-variance inputs (scores of order one after the 1/sqrt(d) scale).
  fill_normal(p.q, rng, 1.0f);
  fill_normal(p.k, rng, 1.0f);
  fill_normal(p.v, rng, 1.0f);
  fill_normal(p.dout, rng, 1.0f);
  // Padding rows past the last sequence hold NaN: a backend that reads them is caught.
  if (varlen && c.varlen_pad_rows > 0) {
    for (HostTensor* t : {&p.q, &p.k, &p.v, &p.dout}) {
      const std::int64_t per_row = t->size(1) * t->size(2);
      const std::int64_t rows = t->size(0);
      for (std::int64_t i = (rows - c.varlen_pad_rows) * per_row; i < rows * per_row; ++i)
        t->set(i, std::numeric_limits<float>::quiet_NaN());
    }
  }
  if (c.bias != BiasKind::none) {
    const bool bb = c.bias == BiasKind::bcast_batch || c.bias == BiasKind::bcast_both;
    const bool bh = c.bias == BiasKind::bcast_heads || c.bias == BiasKind::bcast_both;
    p.bias = HostTensor::make(c.bias_f32 ? DType::f32 : c.dtype,
                              {bb ? 1 : p.batch, bh ? 1 : c.heads_q, p.max_seqlen_q, p.max_seqlen_k},
                              {}, c.layout == Layout::padded ? 5 : 0);
    fill_normal(p.bias, rng, 2.0f);  // a few units: moves the softmax noticeably
  }
  if (c.alibi != AlibiKind::none) {
    // ALiBi's geometric slopes 2^(-8(h+1)/H), jittered so heads/batches differ.
    std::uniform_real_distribution<float> jitter(0.8f, 1.2f);
    const bool per_b = c.alibi == AlibiKind::per_batch_head;
    p.alibi = per_b ? HostTensor::make(DType::f32, {p.batch, c.heads_q})
                    : HostTensor::make(DType::f32, {c.heads_q});
    for (std::int64_t i = 0; i < p.alibi.numel(); ++i) {
      const int h = int(i % c.heads_q);
      p.alibi.set(i, std::exp2(-8.0f * float(h + 1) / float(c.heads_q)) * jitter(rng));
    }
  }
  return p;
}

flashattn::Options Problem::options(
    Backend backend, const std::function<flashattn::TensorView(const HostTensor&)>& map) const {
  auto as_view = [&](const HostTensor& t) { return map ? map(t) : t.view; };
  flashattn::Options o;
  o.softmax_scale = c.scale;
  o.causal = c.causal;
  o.alignment = c.alignment;
  o.window_left = c.window_left;
  o.window_right = c.window_right;
  o.softcap = c.softcap;
  if (bias.defined()) o.bias = as_view(bias);
  if (alibi.defined()) o.alibi_slopes = as_view(alibi);
  if (cu_q.defined()) {
    o.cu_seqlens_q = as_view(cu_q);
    o.cu_seqlens_k = as_view(cu_k);
    o.max_seqlen_q = max_seqlen_q;
    o.max_seqlen_k = max_seqlen_k;
  }
  o.backend = backend;
  return o;
}

std::string Problem::describe() const {
  return c.name() + " seed=" + std::to_string(seed) +
         " (rerun with FLASHATTN_TEST_SEED=" + std::to_string(seed) + ")";
}

std::vector<char> Problem::valid_mask(const std::string& which) const {
  if (!c.varlen() || c.varlen_pad_rows == 0) return {};
  // Only padding rows past the last sequence are outside the problem.
  const std::int64_t used_q = total_q - c.varlen_pad_rows, used_k = total_k - c.varlen_pad_rows;
  if (which == "lse") {  // (heads, total_q)
    std::vector<char> m(std::size_t(c.heads_q * total_q));
    for (std::int64_t i = 0; i < std::int64_t(m.size()); ++i) m[std::size_t(i)] = (i % total_q) < used_q;
    return m;
  }
  if (which == "dbias") return {};
  const bool kside = which == "dk" || which == "dv";
  const std::int64_t rows = kside ? total_k : total_q, used = kside ? used_k : used_q;
  const std::int64_t per_row = std::int64_t(kside ? c.heads_kv : c.heads_q) * c.head_dim;
  std::vector<char> m(std::size_t(rows * per_row));
  for (std::int64_t i = 0; i < std::int64_t(m.size()); ++i) m[std::size_t(i)] = i / per_row < used;
  return m;
}

Outputs alloc_outputs(const Problem& p, bool backward, std::optional<DType> dtype) {
  const DType dt = dtype.value_or(p.q.dtype());
  const bool varlen = p.c.varlen();
  auto like = [&](const HostTensor& t) {
    std::vector<std::int64_t> shape(std::size_t(t.rank()));
    for (int d = 0; d < t.rank(); ++d) shape[std::size_t(d)] = t.size(d);
    return make_operand(dt, p.c.layout, varlen, shape);
  };
  Outputs o;
  o.out = like(p.q);
  o.lse = varlen ? HostTensor::make(DType::f32, {p.c.heads_q, p.total_q})
                 : HostTensor::make(DType::f32, {p.batch, p.c.heads_q, p.max_seqlen_q});
  if (backward) {
    o.dq = like(p.q);
    o.dk = like(p.k);
    o.dv = like(p.v);
    if (p.c.bias_grad && p.bias.defined()) {
      std::vector<std::int64_t> shape{p.bias.size(0), p.bias.size(1), p.bias.size(2), p.bias.size(3)};
      const DType bdt = dtype ? (p.bias.dtype() == DType::f32 ? DType::f32 : dt) : p.bias.dtype();
      o.dbias = HostTensor::make(bdt, shape, {}, p.c.layout == Layout::padded ? 2 : 0);
    }
  }
  for (HostTensor* t : {&o.out, &o.lse, &o.dq, &o.dk, &o.dv, &o.dbias}) t->poison();
  return o;
}

Outputs run(const Problem& p, Backend backend, bool backward) {
  Outputs o = alloc_outputs(p, backward);
  const flashattn::Options opt = p.options(backend);
  flashattn::forward(p.q.view, p.k.view, p.v.view, o.out.view, o.lse.view, opt);
  if (backward) {
    std::optional<flashattn::TensorView> dbias;
    if (o.dbias.defined()) dbias = o.dbias.view;
    flashattn::backward(p.q.view, p.k.view, p.v.view, o.out.view, p.dout.view, o.lse.view, o.dq.view,
                        o.dk.view, o.dv.view, opt, dbias);
  }
  return o;
}

Outputs run_reference(const Problem& p, bool backward) {
  if (p.q.dtype() == DType::f32 && (!p.bias.defined() || p.bias.dtype() == DType::f32))
    return run(p, Backend::cpu_reference, backward);
  // The inputs are already rounded to the low precision; their fp32 copies are exact.
  Problem r = p;
  r.c.dtype = DType::f32;
  r.q = p.q.to_f32();
  r.k = p.k.to_f32();
  r.v = p.v.to_f32();
  r.dout = p.dout.to_f32();
  if (p.bias.defined()) r.bias = p.bias.to_f32();
  return run(r, Backend::cpu_reference, backward);
}

}  // namespace fa_test
