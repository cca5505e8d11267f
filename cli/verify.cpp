#include "verify.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace cli {

namespace {
constexpr float kInf = std::numeric_limits<float>::infinity();

// Element offsets into the (B,S,H,D) or varlen (total,H,D) layouts.
struct Layout {
  const Spec& s;
  std::int64_t q(int b, std::int64_t row, int h) const {
    const std::int64_t r = s.varlen() ? s.row0_q(b) + row : std::int64_t(b) * s.seqlen_q + row;
    return (r * s.heads + h) * s.head_dim;
  }
  std::int64_t k(int b, std::int64_t row, int hk) const {
    const std::int64_t r = s.varlen() ? s.row0_k(b) + row : std::int64_t(b) * s.seqlen_k + row;
    return (r * s.heads_k + hk) * s.head_dim;
  }
  std::int64_t lse(int b, int h, std::int64_t i) const {
    return s.varlen() ? std::int64_t(h) * s.total_q() + s.row0_q(b) + i
                      : (std::int64_t(b) * s.heads + h) * s.seqlen_q + i;
  }
  std::int64_t bias(const Tensor& t, int b, int h, std::int64_t i, std::int64_t j) const {
    const std::int64_t bb = t.shape[0] == 1 ? 0 : b, bh = t.shape[1] == 1 ? 0 : h;
    return ((bb * t.shape[1] + bh) * s.seqlen_q + i) * s.seqlen_k + j;
  }
};

float slope(const Inputs& in, int b, int h) {
  if (!in.alibi) return 0.0f;
  return in.alibi->get(in.spec.alibi_per_batch ? std::int64_t(b) * in.spec.heads + h : h);
}
}  // namespace

Outputs reference(const Inputs& in, bool backward, bool dbias) {
  const Inputs f = to_fp32(in);
  Session s(f, Device{}, Backend::cpu_reference, 0, backward, dbias);
#ifdef _OPENMP
  // The row problems are tiny and many: waking a thread team for each costs more
  // than the work (and much more on a loaded machine).
  const Spec& sp = in.spec;
  const bool tiny = double(sp.total_q()) * double(sp.seqlen_k) * sp.heads * sp.head_dim < 1e6;
  const int saved = omp_get_max_threads();
  if (tiny) omp_set_num_threads(1);
#endif
  s.forward();
  if (backward) s.backward();
#ifdef _OPENMP
  if (tiny) omp_set_num_threads(saved);
#endif
  return s.fetch(backward);
}

Outputs naive_lowp(const Inputs& in, bool backward, bool want_dbias) {
  const Spec& s = in.spec;
  const DType t = s.dtype;
  auto R = [t](float x) { return round_to(t, x); };
  const int D = s.head_dim, group = s.heads / s.heads_k;
  const float scale = s.softmax_scale();
  const bool dbias = want_dbias && in.bias.has_value();
  Outputs o = make_outputs(s, DType::f32, backward, dbias);  // zero-filled
  std::vector<float> dbias_acc(dbias ? std::size_t(in.bias->numel()) : 0, 0.0f);
  const Layout L{s};
  // Plain float copies: the loops below touch each element many times.
  auto floats = [](const Tensor& t) {
    std::vector<float> r(std::size_t(t.numel()));
    for (std::int64_t i = 0; i < t.numel(); ++i) r[std::size_t(i)] = t.get(i);
    return r;
  };
  const std::vector<float> Q = floats(in.q), K = floats(in.k), V = floats(in.v);
  const std::vector<float> dO = backward ? floats(in.dout) : std::vector<float>{};
  const std::vector<float> Bias = in.bias ? floats(*in.bias) : std::vector<float>{};

  std::vector<float> qs, x, capped, p, dp, dkh, dvh;
  for (int b = 0; b < s.batch; ++b) {
    const std::int64_t lq = s.len_q(b), lk = s.len_k(b);
    for (int h = 0; h < s.heads; ++h) {
      const int hk = h / group;
      const float sl = slope(in, b, h);
      qs.assign(std::size_t(lq * D), 0.0f);
      for (std::int64_t i = 0; i < lq; ++i)
        for (int c = 0; c < D; ++c) qs[std::size_t(i * D + c)] = R(Q[L.q(b, i, h) + c] * scale);
      dkh.assign(std::size_t(lk * D), 0.0f);
      dvh.assign(std::size_t(lk * D), 0.0f);
      for (std::int64_t i = 0; i < lq; ++i) {
        const KeyRange kr = visible_keys(s, lq, lk, i);
        const std::int64_t n = kr.count();
        x.assign(std::size_t(n), 0.0f);
        capped.assign(std::size_t(n), 0.0f);
        float m = -kInf;
        for (std::int64_t jj = 0; jj < n; ++jj) {
          const std::int64_t j = kr.begin + jj;
          float dot = 0;
          for (int c = 0; c < D; ++c) dot += qs[std::size_t(i * D + c)] * K[L.k(b, j, hk) + c];
          float v = R(dot);
          if (s.softcap > 0) v = R(s.softcap * std::tanh(v / s.softcap));
          capped[std::size_t(jj)] = v;
          if (in.bias) v = R(v + Bias[L.bias(*in.bias, b, h, i, j)]);
          if (in.alibi) v = R(v - sl * float(std::llabs(diagonal(s, lq, lk, i) - j)));
          x[std::size_t(jj)] = v;
          m = std::max(m, v);
        }
        const std::int64_t oi = L.q(b, i, h);
        if (m == -kInf) {  // no visible key: O = 0 (already), lse = -inf, no gradient
          o.lse.set(L.lse(b, h, i), -kInf);
          continue;
        }
        float sum = 0;
        for (std::int64_t jj = 0; jj < n; ++jj) sum += std::exp(x[std::size_t(jj)] - m);
        p.assign(std::size_t(n), 0.0f);
        for (std::int64_t jj = 0; jj < n; ++jj) p[std::size_t(jj)] = R(std::exp(x[std::size_t(jj)] - m) / sum);
        o.lse.set(L.lse(b, h, i), m + std::log(sum));
        for (int c = 0; c < D; ++c) {
          float acc = 0;
          for (std::int64_t jj = 0; jj < n; ++jj) acc += p[std::size_t(jj)] * V[L.k(b, kr.begin + jj, hk) + c];
          o.out.set(oi + c, R(acc));
        }
        if (!backward) continue;
        dp.assign(std::size_t(n), 0.0f);
        float Di = 0;
        for (std::int64_t jj = 0; jj < n; ++jj) {
          float acc = 0;
          const std::int64_t vo = L.k(b, kr.begin + jj, hk);
          for (int c = 0; c < D; ++c) acc += dO[oi + c] * V[vo + c];
          dp[std::size_t(jj)] = R(acc);
          Di += p[std::size_t(jj)] * dp[std::size_t(jj)];
        }
        std::vector<float> dq(std::size_t(D), 0.0f);
        for (std::int64_t jj = 0; jj < n; ++jj) {
          const std::int64_t j = kr.begin + jj;
          const float pj = p[std::size_t(jj)];
          float ds = R(pj * (dp[std::size_t(jj)] - Di));
          if (dbias) dbias_acc[std::size_t(L.bias(*in.bias, b, h, i, j))] += ds;
          if (s.softcap > 0) {
            const float tc = capped[std::size_t(jj)] / s.softcap;
            ds = R(ds * (1.0f - tc * tc));
          }
          const std::int64_t ko = L.k(b, j, hk);
          for (int c = 0; c < D; ++c) {
            dq[std::size_t(c)] += ds * K[ko + c];
            dkh[std::size_t(j * D + c)] += ds * qs[std::size_t(i * D + c)];
            dvh[std::size_t(j * D + c)] += pj * dO[oi + c];
          }
        }
        for (int c = 0; c < D; ++c) o.dq.set(oi + c, R(R(dq[std::size_t(c)]) * scale));
      }
      if (!backward) continue;
      // Per-head gradients are rounded, then the heads of a group summed (as
      // repeating K/V across the group and differentiating would do).
      for (std::int64_t j = 0; j < lk; ++j)
        for (int c = 0; c < D; ++c) {
          const std::int64_t ko = L.k(b, j, hk) + c;
          o.dk.set(ko, o.dk.get(ko) + R(dkh[std::size_t(j * D + c)]));
          o.dv.set(ko, o.dv.get(ko) + R(dvh[std::size_t(j * D + c)]));
        }
    }
  }
  if (backward) {
    for (std::int64_t e = 0; e < o.dk.numel(); ++e) {
      o.dk.set(e, R(o.dk.get(e)));
      o.dv.set(e, R(o.dv.get(e)));
    }
    if (dbias)
      for (std::int64_t e = 0; e < o.dbias->numel(); ++e) o.dbias->set(e, R(dbias_acc[std::size_t(e)]));
  }
  return o;
}

// ---------------------------------------------------------------------------

namespace {
double elem_error(float got, float ref) {
  if (std::isinf(ref)) return got == ref ? 0.0 : double(kInf);
  const double e = std::fabs(double(got) - double(ref));
  return std::isfinite(e) ? e : double(kInf);  // NaN or inf where the reference is finite
}
}  // namespace

void ErrorStat::add(const Tensor& got, const Tensor& ref, const Tensor* nv) {
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    const float r = ref.get(i);
    if (std::isfinite(r)) ref_max = std::max(ref_max, double(std::fabs(r)));
    err = std::max(err, elem_error(got.get(i), r));
    if (nv) naive = std::max(naive, elem_error(nv->get(i), r));
  }
}

double ulp(DType dtype, double x) {
  int mant = 23, min_exp = -126;
  if (dtype == DType::f16) mant = 10, min_exp = -14;
  if (dtype == DType::bf16) mant = 7;
  int e = x > 0 ? int(std::floor(std::log2(x))) : min_exp;
  return std::ldexp(1.0, std::max(e, min_exp) - mant);
}

double ErrorStat::bound(DType dtype) const {
  if (dtype == DType::f32) return kFp32RelTol * ref_max + kFp32AbsTol;
  // Both sides round their final result to the dtype (half an ulp each); the lse is
  // stored in fp32 whatever the inputs.
  return 2.0 * naive + 2.0 * ulp(name == "lse" ? DType::f32 : dtype, ref_max);
}

bool ErrorStat::pass(DType dtype) const { return std::isfinite(err) && err <= bound(dtype); }

bool CheckResult::pass(DType dtype) const {
  for (const auto& s : stats)
    if (!s.pass(dtype)) return false;
  return true;
}

const ErrorStat& CheckResult::worst(DType dtype) const {
  std::size_t w = 0;
  double worst_ratio = -1;
  for (std::size_t i = 0; i < stats.size(); ++i) {
    const double bnd = stats[i].bound(dtype);
    const double ratio = !std::isfinite(stats[i].err) ? double(kInf)
                         : bnd > 0                    ? stats[i].err / bnd
                         : stats[i].err > 0           ? double(kInf)
                                                      : 0.0;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      w = i;
    }
  }
  return stats[w];
}

CheckResult compare(const Outputs& got, const Outputs& ref, const Outputs* naive, bool backward) {
  CheckResult r;
  auto add = [&](const char* name, const Tensor& g, const Tensor& rf, const Tensor* nv) {
    ErrorStat s;
    s.name = name;
    s.add(g, rf, nv);
    r.stats.push_back(s);
  };
  add("out", got.out, ref.out, naive ? &naive->out : nullptr);
  add("lse", got.lse, ref.lse, naive ? &naive->lse : nullptr);
  if (backward) {
    add("dq", got.dq, ref.dq, naive ? &naive->dq : nullptr);
    add("dk", got.dk, ref.dk, naive ? &naive->dk : nullptr);
    add("dv", got.dv, ref.dv, naive ? &naive->dv : nullptr);
    if (got.dbias && ref.dbias)
      add("dbias", *got.dbias, *ref.dbias, naive && naive->dbias ? &*naive->dbias : nullptr);
  }
  return r;
}

// ---------------------------------------------------------------------------

std::vector<RowSample> sample_rows(const Spec& s, int count, std::mt19937_64& rng) {
  std::vector<RowSample> rows;
  if (s.batch == 0 || s.seqlen_q == 0) return rows;
  rows.push_back({0, 0, 0});
  rows.push_back({s.batch - 1, s.heads - 1, s.seqlen_q - 1});
  for (int n = 2; n < count; ++n) {
    RowSample r;
    r.b = int(rng() % std::uint64_t(s.batch));
    r.h = int(rng() % std::uint64_t(s.heads));
    r.i = std::int64_t(rng() % std::uint64_t(s.seqlen_q));
    rows.push_back(r);
  }
  return rows;
}

Inputs row_problem(const Inputs& full, const RowSample& r) {
  const Spec& fs = full.spec;
  const int D = fs.head_dim;
  const int hk = r.h / (fs.heads / fs.heads_k);
  const KeyRange kr = visible_keys(fs, fs.seqlen_q, fs.seqlen_k, r.i);
  const std::int64_t n = kr.count();
  Inputs in;
  Spec& s = in.spec;
  s.batch = s.heads = s.heads_k = 1;
  s.head_dim = D;
  s.seqlen_q = 1;
  s.seqlen_k = n;
  s.dtype = fs.dtype;
  s.causal = false;
  s.softcap = fs.softcap;
  s.scale = fs.softmax_scale();
  in.q = block(full.q, {r.b, r.i, r.h, 0}, {1, 1, 1, D});
  in.k = block(full.k, {r.b, kr.begin, hk, 0}, {1, n, 1, D});
  in.v = block(full.v, {r.b, kr.begin, hk, 0}, {1, n, 1, D});
  if (!full.dout.shape.empty()) in.dout = block(full.dout, {r.b, r.i, r.h, 0}, {1, 1, 1, D});
  if (full.bias || full.alibi) {
    s.bias = BiasKind::shared;
    in.bias = Tensor(DType::f32, {1, 1, 1, n});
    const Layout L{fs};
    const float sl = slope(full, r.b, r.h);
    const std::int64_t d = diagonal(fs, fs.seqlen_q, fs.seqlen_k, r.i);
    for (std::int64_t jj = 0; jj < n; ++jj) {
      const std::int64_t j = kr.begin + jj;
      double v = 0;
      if (full.bias) v += full.bias->get(L.bias(*full.bias, r.b, r.h, r.i, j));
      if (full.alibi) v -= double(sl) * double(std::llabs(d - j));
      in.bias->set(jj, float(v));
    }
  }
  return in;
}

CheckResult check_rows(const Inputs& full, const Outputs& got, const std::vector<RowSample>& rows,
                       bool backward_dq) {
  const Spec& fs = full.spec;
  const bool lowp = fs.dtype != DType::f32;
  const int D = fs.head_dim;
  ErrorStat out{"out"}, lse{"lse"}, dq{"dq"};
  for (const RowSample& r : rows) {
    const Inputs rp = row_problem(full, r);
    const Outputs ref = reference(rp, backward_dq, false);
    Outputs nv;
    if (lowp) nv = naive_lowp(rp, backward_dq, false);
    out.add(block(got.out, {r.b, r.i, r.h, 0}, {1, 1, 1, D}), ref.out, lowp ? &nv.out : nullptr);
    lse.add(block(got.lse, {r.b, r.h, r.i}, {1, 1, 1}), ref.lse, lowp ? &nv.lse : nullptr);
    if (backward_dq) dq.add(block(got.dq, {r.b, r.i, r.h, 0}, {1, 1, 1, D}), ref.dq, lowp ? &nv.dq : nullptr);
  }
  CheckResult c;
  c.stats = {out, lse};
  if (backward_dq) c.stats.push_back(dq);
  return c;
}

Inputs head_slice(const Inputs& full, int b, int hk) {
  const Spec& fs = full.spec;
  const int group = fs.heads / fs.heads_k, D = fs.head_dim;
  Inputs in;
  Spec& s = in.spec;
  s = fs;
  s.batch = 1;
  s.heads = group;
  s.heads_k = 1;
  s.scale = fs.softmax_scale();
  in.q = block(full.q, {b, 0, hk * group, 0}, {1, fs.seqlen_q, group, D});
  in.k = block(full.k, {b, 0, hk, 0}, {1, fs.seqlen_k, 1, D});
  in.v = block(full.v, {b, 0, hk, 0}, {1, fs.seqlen_k, 1, D});
  if (!full.dout.shape.empty()) in.dout = block(full.dout, {b, 0, hk * group, 0}, {1, fs.seqlen_q, group, D});
  if (full.bias) {
    const Tensor& t = *full.bias;
    const bool per_head = t.shape[1] != 1;
    s.bias = per_head ? BiasKind::per_head : BiasKind::shared;
    in.bias = block(t, {t.shape[0] == 1 ? 0 : b, per_head ? hk * group : 0, 0, 0},
                    {1, per_head ? group : 1, fs.seqlen_q, fs.seqlen_k});
  }
  if (full.alibi) {
    s.alibi_per_batch = false;
    in.alibi = Tensor(DType::f32, {group});
    for (int g = 0; g < group; ++g) in.alibi->set(g, slope(full, b, hk * group + g));
  }
  return in;
}

Outputs head_slice(const Outputs& got, const Spec& fs, int b, int hk) {
  const int group = fs.heads / fs.heads_k, D = fs.head_dim;
  Outputs o;
  o.out = block(got.out, {b, 0, hk * group, 0}, {1, fs.seqlen_q, group, D});
  o.lse = block(got.lse, {b, hk * group, 0}, {1, group, fs.seqlen_q});
  if (!got.dq.shape.empty()) {
    o.dq = block(got.dq, {b, 0, hk * group, 0}, {1, fs.seqlen_q, group, D});
    o.dk = block(got.dk, {b, 0, hk, 0}, {1, fs.seqlen_k, 1, D});
    o.dv = block(got.dv, {b, 0, hk, 0}, {1, fs.seqlen_k, 1, D});
  }
  return o;
}

}  // namespace cli
