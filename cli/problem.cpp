#include "problem.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace cli {

std::int64_t Spec::row0_q(int b) const {
  std::int64_t r = 0;
  for (int i = 0; i < b && varlen(); ++i) r += len_q(i);
  return r;
}
std::int64_t Spec::row0_k(int b) const {
  std::int64_t r = 0;
  for (int i = 0; i < b && varlen(); ++i) r += len_k(i);
  return r;
}
std::int64_t Spec::total_q() const {
  std::int64_t r = 0;
  for (int i = 0; i < batch; ++i) r += len_q(i);
  return r;
}
std::int64_t Spec::total_k() const {
  std::int64_t r = 0;
  for (int i = 0; i < batch; ++i) r += len_k(i);
  return r;
}
float Spec::softmax_scale() const { return scale.value_or(1.0f / std::sqrt(float(head_dim))); }

std::string Spec::describe() const {
  std::ostringstream o;
  o << "B=" << batch << " H=" << heads;
  if (heads_k != heads) o << " Hk=" << heads_k;
  o << " Sq=" << seqlen_q << " Sk=" << seqlen_k << " D=" << head_dim;
  if (varlen()) o << " varlen(max)";
  const char* align = alignment == Alignment::top_left ? "top-left" : "bottom-right";
  if (causal) o << " causal(" << align << ")";
  if (window_left >= 0 || window_right >= 0)
    o << " window(" << window_left << "," << window_right << "," << align << ")";
  if (softcap > 0) o << " softcap=" << softcap;
  static const char* bias_names[] = {"", "bias(B,H)", "bias(1,H)", "bias(B,1)", "bias(1,1)"};
  if (bias != BiasKind::none) o << ' ' << bias_names[int(bias)];
  if (alibi) o << (alibi_per_batch ? " alibi(B,H)" : " alibi(H)");
  return o.str();
}

std::int64_t diagonal(const Spec& s, std::int64_t len_q, std::int64_t len_k, std::int64_t i) {
  return i + (s.alignment == Alignment::top_left ? 0 : len_k - len_q);
}

KeyRange visible_keys(const Spec& s, std::int64_t len_q, std::int64_t len_k, std::int64_t i) {
  const std::int64_t d = diagonal(s, len_q, len_k, i);
  const std::int64_t right = s.causal ? 0 : s.window_right;
  KeyRange r;
  r.begin = s.window_left < 0 ? 0 : std::max<std::int64_t>(0, d - s.window_left);
  r.end = right < 0 ? len_k : std::clamp<std::int64_t>(d + right + 1, 0, len_k);
  return r;
}

double forward_flops(const Spec& s) {
  const double per_pair = 4.0 * s.heads * s.head_dim;
  const bool window = s.window_left >= 0 || s.window_right >= 0;
  double pairs = 0;
  for (int b = 0; b < s.batch; ++b) {
    const std::int64_t lq = s.len_q(b), lk = s.len_k(b);
    if (!window) {
      pairs += double(lq) * double(lk) * (s.causal ? 0.5 : 1.0);
      continue;
    }
    for (std::int64_t i = 0; i < lq; ++i) pairs += double(visible_keys(s, lq, lk, i).count());
  }
  return per_pair * pairs;
}

std::vector<std::int64_t> q_shape(const Spec& s) {
  if (s.varlen()) return {s.total_q(), s.heads, s.head_dim};
  return {s.batch, s.seqlen_q, s.heads, s.head_dim};
}
std::vector<std::int64_t> kv_shape(const Spec& s) {
  if (s.varlen()) return {s.total_k(), s.heads_k, s.head_dim};
  return {s.batch, s.seqlen_k, s.heads_k, s.head_dim};
}
std::vector<std::int64_t> lse_shape(const Spec& s) {
  if (s.varlen()) return {s.heads, s.total_q()};
  return {s.batch, s.heads, s.seqlen_q};
}
std::vector<std::int64_t> bias_shape(const Spec& s) {
  const bool per_batch = s.bias == BiasKind::full || s.bias == BiasKind::per_batch;
  const bool per_head = s.bias == BiasKind::full || s.bias == BiasKind::per_head;
  return {per_batch ? s.batch : 1, per_head ? s.heads : 1, s.seqlen_q, s.seqlen_k};
}

Tensor alibi_slopes(const Spec& s) {
  Tensor t = s.alibi_per_batch ? Tensor(DType::f32, {s.batch, s.heads}) : Tensor(DType::f32, {s.heads});
  const int nb = s.alibi_per_batch ? s.batch : 1;
  for (int b = 0; b < nb; ++b)
    for (int h = 0; h < s.heads; ++h)
      t.set(std::int64_t(b) * s.heads + h, float(std::exp2(-8.0 * (h + 1) / s.heads) * (1.0 + 0.5 * b)));
  return t;
}

Inputs random_inputs(const Spec& s, std::mt19937_64& rng, bool with_dout) {
  Inputs in;
  in.spec = s;
  in.q = Tensor(s.dtype, q_shape(s));
  in.k = Tensor(s.dtype, kv_shape(s));
  in.v = Tensor(s.dtype, kv_shape(s));
  fill_normal(in.q, rng);
  fill_normal(in.k, rng);
  fill_normal(in.v, rng);
  if (with_dout) {
    in.dout = Tensor(s.dtype, q_shape(s));
    fill_normal(in.dout, rng);
  }
  if (s.bias != BiasKind::none) {
    in.bias = Tensor(s.dtype, bias_shape(s));
    fill_normal(*in.bias, rng);
  }
  if (s.alibi) in.alibi = alibi_slopes(s);
  if (s.varlen()) {
    in.cu_q = Tensor(DType::i32, {s.batch + 1});
    in.cu_k = Tensor(DType::i32, {s.batch + 1});
    auto* cq = static_cast<std::int32_t*>(in.cu_q->data());
    auto* ck = static_cast<std::int32_t*>(in.cu_k->data());
    for (int b = 0; b <= s.batch; ++b) {
      cq[b] = std::int32_t(s.row0_q(b));
      ck[b] = std::int32_t(s.row0_k(b));
    }
  }
  return in;
}

Outputs make_outputs(const Spec& s, DType dtype, bool backward, bool dbias) {
  Outputs o;
  o.out = Tensor(dtype, q_shape(s));
  o.lse = Tensor(DType::f32, lse_shape(s));
  if (backward) {
    o.dq = Tensor(dtype, q_shape(s));
    o.dk = Tensor(dtype, kv_shape(s));
    o.dv = Tensor(dtype, kv_shape(s));
    if (dbias) o.dbias = Tensor(dtype, bias_shape(s));
  }
  return o;
}

Inputs to_fp32(const Inputs& in) {
  Inputs r = in;
  r.spec.dtype = DType::f32;
  r.q = in.q.to(DType::f32);
  r.k = in.k.to(DType::f32);
  r.v = in.v.to(DType::f32);
  if (!in.dout.shape.empty()) r.dout = in.dout.to(DType::f32);
  if (in.bias) r.bias = in.bias->to(DType::f32);
  return r;
}

Tensor block(const Tensor& t, const std::vector<std::int64_t>& start, const std::vector<std::int64_t>& size) {
  // Pad to rank 4 so one loop nest serves every rank.
  const std::size_t rank = t.shape.size();
  std::array<std::int64_t, 4> sh{1, 1, 1, 1}, st{0, 0, 0, 0}, sz{1, 1, 1, 1};
  for (std::size_t d = 0; d < rank; ++d) {
    sh[4 - rank + d] = t.shape[d];
    st[4 - rank + d] = start[d];
    sz[4 - rank + d] = size[d];
  }
  Tensor r(t.dtype, size);
  const std::size_t es = flashattn::dtype_size(t.dtype);
  std::int64_t o = 0;
  for (std::int64_t a = 0; a < sz[0]; ++a)
    for (std::int64_t b = 0; b < sz[1]; ++b)
      for (std::int64_t c = 0; c < sz[2]; ++c) {
        const std::int64_t src = (((st[0] + a) * sh[1] + st[1] + b) * sh[2] + st[2] + c) * sh[3] + st[3];
        std::copy_n(t.bytes.data() + src * std::int64_t(es), sz[3] * std::int64_t(es),
                    r.bytes.data() + o * std::int64_t(es));
        o += sz[3];
      }
  return r;
}

Session::Session(const Inputs& in, Device device, Backend backend, int threads, bool backward, bool dbias)
    : in_(in), mem_(device), backward_(backward), dbias_(dbias && in.bias.has_value()) {
  const Spec& s = in.spec;
  host_ = make_outputs(s, s.dtype, backward_, dbias_);
  if (dbias_) host_.dbias = Tensor(in.bias->dtype, in.bias->shape);
  q_ = mem_.put(in.q);
  k_ = mem_.put(in.k);
  v_ = mem_.put(in.v);
  out_ = mem_.output(host_.out);
  lse_ = mem_.output(host_.lse);
  if (backward_) {
    dout_ = mem_.put(in.dout);
    dq_ = mem_.output(host_.dq);
    dk_ = mem_.output(host_.dk);
    dv_ = mem_.output(host_.dv);
    if (dbias_) dbias_view_ = mem_.output(*host_.dbias);
  }
  if (in.bias) opt_.bias = mem_.put(*in.bias);
  if (in.alibi) opt_.alibi_slopes = mem_.put(*in.alibi);
  if (s.varlen()) {
    opt_.cu_seqlens_q = mem_.put(*in.cu_q);
    opt_.cu_seqlens_k = mem_.put(*in.cu_k);
    opt_.max_seqlen_q = s.seqlen_q;
    opt_.max_seqlen_k = s.seqlen_k;
  }
  opt_.softmax_scale = s.scale;
  opt_.causal = s.causal;
  opt_.alignment = s.alignment;
  opt_.window_left = int(s.window_left);
  opt_.window_right = int(s.window_right);
  opt_.softcap = s.softcap;
  opt_.backend = backend;
  opt_.num_threads = threads;
}

flashattn::Result Session::forward() { return flashattn::forward(q_, k_, v_, out_, lse_, opt_); }

flashattn::Result Session::backward() {
  return flashattn::backward(q_, k_, v_, out_, dout_, lse_, dq_, dk_, dv_, opt_, dbias_view_);
}

void Session::poison_outputs() {
  mem_.poison(out_);
  mem_.poison(lse_);
  if (backward_) {
    mem_.poison(dq_);
    mem_.poison(dk_);
    mem_.poison(dv_);
    if (dbias_view_) mem_.poison(*dbias_view_);
  }
}

Outputs Session::fetch(bool backward) {
  mem_.synchronize();
  Outputs o = host_;  // copies the host holders (on CPU: the results themselves)
  if (mem_.device().kind == flashattn::DeviceKind::cuda) {
    mem_.get(out_, o.out);
    mem_.get(lse_, o.lse);
    if (backward && backward_) {
      mem_.get(dq_, o.dq);
      mem_.get(dk_, o.dk);
      mem_.get(dv_, o.dv);
      if (dbias_view_) mem_.get(*dbias_view_, *o.dbias);
    }
  }
  return o;
}

}  // namespace cli
