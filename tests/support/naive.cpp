// The naive attention in the problem's own precision, the way a framework's math
// path computes it: every matrix product accumulates in fp32 and its result is
// rounded to the dtype; the softmax runs in fp32 and P is rounded to the dtype.
// Its error against the fp64 reference is the yardstick of the fp16/bf16 rule.
#include <cmath>
#include <limits>
#include <vector>

#include "half.hpp"
#include "mask.hpp"
#include "support.hpp"

namespace fa_test {

namespace fd = flashattn::detail;

namespace {

float round_to(DType t, float x) {
  switch (t) {
    case DType::f16: return fd::fp16_to_float(fd::float_to_fp16(x));
    case DType::bf16: return fd::bf16_to_float(fd::float_to_bf16(x));
    default: return x;
  }
}

// Logical indexing of (batch, row, head, dim) / (row, head, dim) operands.
struct Indexer {
  bool varlen;
  std::int64_t off(const HostTensor& t, int b, std::int64_t row0, std::int64_t row, int h, int c) const {
    return varlen ? t.offset_of({row0 + row, h, c}) : t.offset_of({b, row, h, c});
  }
};

float load(const HostTensor& t, std::int64_t off) { return fd::load_as_float(t.data(), t.dtype(), off); }
void store(HostTensor& t, std::int64_t off, float x) { fd::store_from_float(t.data(), t.dtype(), off, x); }

}  // namespace

Outputs run_naive_low_precision(const Problem& p, bool backward) {
  const Case& c = p.c;
  const DType dt = c.dtype;
  const int d = c.head_dim;
  const int group = c.heads_q / c.heads_kv;
  const bool varlen = c.varlen();
  const Indexer ix{varlen};
  Outputs o = alloc_outputs(p, backward);
  const float scale = c.scale.value_or(1.0f / std::sqrt(float(d)));
  const float ninf = -std::numeric_limits<float>::infinity();

  // Mask parameters through the library's own definition.
  fd::ForwardParams mp;
  mp.window_left = c.window_left;
  mp.window_right = c.causal ? 0 : c.window_right;
  mp.align_top_left = c.alignment == Alignment::top_left;

  const bool want_dbias = backward && o.dbias.defined();
  const std::int64_t sq_max = p.max_seqlen_q, sk_max = p.max_seqlen_k;
  // dbias accumulated in fp32 per bias slot, rounded once at the end.
  std::vector<float> dbias_acc(want_dbias ? std::size_t(p.bias.size(0) * p.bias.size(1) * sq_max * sk_max) : 0, 0.0f);

#pragma omp parallel for collapse(2) schedule(dynamic) if (!want_dbias)
  for (int b = 0; b < p.batch; ++b) {
    for (int hk = 0; hk < c.heads_kv; ++hk) {
      fd::SequenceView s;
      if (varlen) {
        s.q_row0 = std::int64_t(p.cu_q.get(b));
        s.k_row0 = std::int64_t(p.cu_k.get(b));
        s.len_q = std::int64_t(p.cu_q.get(b + 1)) - s.q_row0;
        s.len_k = std::int64_t(p.cu_k.get(b + 1)) - s.k_row0;
      } else {
        s.len_q = c.seqlen_q;
        s.len_k = c.seqlen_k;
      }
      const fd::Mask m = fd::make_mask(mp, s);
      const std::int64_t nq = s.len_q, nk = s.len_k;
      std::vector<float> dk_acc(std::size_t(nk * d), 0.0f), dv_acc(std::size_t(nk * d), 0.0f);
      std::vector<float> S(std::size_t(nq * nk)), P(S.size()), capped(S.size());
      // Rows of this sequence gathered into dense fp32 arrays (exact: values are in dt).
      auto gather = [&](const HostTensor& t, std::int64_t row0, std::int64_t n, int h) {
        std::vector<float> r(std::size_t(n * d));
        for (std::int64_t i = 0; i < n; ++i)
          for (int e = 0; e < d; ++e) r[std::size_t(i * d + e)] = load(t, ix.off(t, b, row0, i, h, e));
        return r;
      };
      const std::vector<float> kf = gather(p.k, s.k_row0, nk, hk), vf = gather(p.v, s.k_row0, nk, hk);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        const std::vector<float> qf = gather(p.q, s.q_row0, nq, h);
        const std::vector<float> dof = backward ? gather(p.dout, s.q_row0, nq, h) : std::vector<float>();
        const float slope = p.alibi.defined()
                                ? (p.alibi.rank() == 2 ? p.alibi.at({b, h}) : p.alibi.at({h}))
                                : 0.0f;
        // Scores, rounded after each step a framework would materialize.
        for (std::int64_t i = 0; i < nq; ++i) {
          for (std::int64_t j = 0; j < nk; ++j) {
            float& x = S[std::size_t(i * nk + j)];
            if (!m.visible(i, j)) {
              x = ninf;
              continue;
            }
            float acc = 0;
            for (int e = 0; e < d; ++e)
              acc += qf[std::size_t(i * d + e)] * kf[std::size_t(j * d + e)];
            x = round_to(dt, scale * acc);
            if (c.softcap > 0) x = round_to(dt, fd::apply_softcap<float>(x, c.softcap));
            capped[std::size_t(i * nk + j)] = x;
            if (p.bias.defined()) {
              const int bb = p.bias.size(0) == 1 ? 0 : b, bh = p.bias.size(1) == 1 ? 0 : h;
              x = round_to(dt, x + p.bias.at({bb, bh, i, j}));
            }
            if (p.alibi.defined()) x = round_to(dt, x - slope * float(m.distance(i, j)));
          }
        }
        // Softmax in fp32, P rounded; lse from the same fp32 pass.
        for (std::int64_t i = 0; i < nq; ++i) {
          float mx = ninf;
          for (std::int64_t j = 0; j < nk; ++j) mx = std::max(mx, S[std::size_t(i * nk + j)]);
          float lse = ninf;
          if (mx == ninf) {
            for (std::int64_t j = 0; j < nk; ++j) P[std::size_t(i * nk + j)] = 0;
          } else {
            float sum = 0;
            for (std::int64_t j = 0; j < nk; ++j) sum += std::exp(S[std::size_t(i * nk + j)] - mx);
            for (std::int64_t j = 0; j < nk; ++j)
              P[std::size_t(i * nk + j)] = round_to(dt, std::exp(S[std::size_t(i * nk + j)] - mx) / sum);
            lse = mx + std::log(sum);
          }
          const std::int64_t lo = varlen ? o.lse.offset_of({h, s.q_row0 + i}) : o.lse.offset_of({b, h, i});
          static_cast<float*>(o.lse.data())[lo] = lse;
          for (int e = 0; e < d; ++e) {
            float acc = 0;
            for (std::int64_t j = 0; j < nk; ++j)
              acc += P[std::size_t(i * nk + j)] * vf[std::size_t(j * d + e)];
            store(o.out, ix.off(o.out, b, s.q_row0, i, h, e), round_to(dt, acc));
          }
        }
        if (!backward) continue;
        // dV = P^T dO, dP = dO V^T, dS = P (dP - D), through the softcap.
        // D = rowsum(dO * O) from O as stored in the dtype: every backward receives
        // the saved output in the dtype (FlashAttention-2's D), and its rounding
        // error reaches dS; with small head dims it dominates, so the yardstick
        // must carry it too. (Exactly, D = rowsum(P * dP).)
        std::vector<float> dX(S.size(), 0.0f);
        for (std::int64_t i = 0; i < nq; ++i) {
          std::vector<float> dP(std::size_t(nk), 0.0f);
          float D = 0;
          for (int e = 0; e < d; ++e)
            D += dof[std::size_t(i * d + e)] * load(o.out, ix.off(o.out, b, s.q_row0, i, h, e));
          for (std::int64_t j = 0; j < nk; ++j) {
            float acc = 0;
            for (int e = 0; e < d; ++e)
              acc += dof[std::size_t(i * d + e)] * vf[std::size_t(j * d + e)];
            dP[std::size_t(j)] = round_to(dt, acc);
          }
          for (std::int64_t j = 0; j < nk; ++j) {
            const float pij = P[std::size_t(i * nk + j)];
            if (pij == 0) continue;
            const float ds = round_to(dt, pij * (dP[std::size_t(j)] - D));
            if (want_dbias) {
              const std::int64_t bb = p.bias.size(0) == 1 ? 0 : b, bh = p.bias.size(1) == 1 ? 0 : h;
              dbias_acc[std::size_t(((bb * p.bias.size(1) + bh) * sq_max + i) * sk_max + j)] += ds;
            }
            dX[std::size_t(i * nk + j)] =
                c.softcap > 0 ? round_to(dt, ds * fd::softcap_derivative<float>(capped[std::size_t(i * nk + j)], c.softcap))
                              : ds;
          }
        }
        for (std::int64_t i = 0; i < nq; ++i)
          for (int e = 0; e < d; ++e) {
            float acc = 0;
            for (std::int64_t j = 0; j < nk; ++j)
              acc += dX[std::size_t(i * nk + j)] * kf[std::size_t(j * d + e)];
            store(o.dq, ix.off(o.dq, b, s.q_row0, i, h, e), round_to(dt, acc * scale));
          }
        for (std::int64_t j = 0; j < nk; ++j)
          for (int e = 0; e < d; ++e) {
            float ak = 0, av = 0;
            for (std::int64_t i = 0; i < nq; ++i) {
              ak += dX[std::size_t(i * nk + j)] * qf[std::size_t(i * d + e)];
              av += P[std::size_t(i * nk + j)] * dof[std::size_t(i * d + e)];
            }
            // Per-head products rounded, then summed over the GQA group in fp32.
            dk_acc[std::size_t(j * d + e)] += round_to(dt, ak * scale);
            dv_acc[std::size_t(j * d + e)] += round_to(dt, av);
          }
      }
      if (!backward) continue;
      for (std::int64_t j = 0; j < nk; ++j)
        for (int e = 0; e < d; ++e) {
          store(o.dk, ix.off(o.dk, b, s.k_row0, j, hk, e), round_to(dt, dk_acc[std::size_t(j * d + e)]));
          store(o.dv, ix.off(o.dv, b, s.k_row0, j, hk, e), round_to(dt, dv_acc[std::size_t(j * d + e)]));
        }
    }
  }
  if (want_dbias) {
    const std::int64_t nb = p.bias.size(0), nh = p.bias.size(1);
    for (std::int64_t bb = 0; bb < nb; ++bb)
      for (std::int64_t bh = 0; bh < nh; ++bh)
        for (std::int64_t i = 0; i < sq_max; ++i)
          for (std::int64_t j = 0; j < sk_max; ++j)
            store(o.dbias, o.dbias.offset_of({bb, bh, i, j}),
                  dbias_acc[std::size_t(((bb * nh + bh) * sq_max + i) * sk_max + j)]);
  }
  return o;
}

}  // namespace fa_test
