// The oracle: naive attention with every score materialized and fp64 accumulation.
// Written for clarity, not speed; every other backend is tested against it.
#include <cmath>
#include <limits>
#include <vector>

#include "backends.hpp"
#include "half.hpp"
#include "mask.hpp"

namespace flashattn::detail::cpu {

namespace {

// Scores of one query row (fp64): scale*q.k, softcapped, plus bias and ALiBi;
// -inf where masked. Returns the row max.
double row_scores(const ForwardParams& p, int b, int h, const SequenceView& s, const Mask& m,
                  std::int64_t i, std::vector<double>& qrow, std::vector<double>& scores) {
  const int d = p.head_dim;
  const int hk = kv_head(p, h);
  const std::int64_t qo = operand_offset(p.q_strides, b, s.q_row0, i, h);
  for (int c = 0; c < d; ++c) qrow[c] = load_as_float(p.q, p.dtype, qo + c);
  const double slope = alibi_slope(p, b, h);
  double mx = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 0; j < s.len_k; ++j) {
    if (!m.visible(i, j)) {
      scores[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const std::int64_t ko = operand_offset(p.k_strides, b, s.k_row0, j, hk);
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += qrow[c] * double(load_as_float(p.k, p.dtype, ko + c));
    double x = apply_softcap<double>(double(p.scale) * dot, double(p.softcap));
    if (p.bias) x += load_as_float(p.bias, p.bias_dtype, bias_offset(p, b, h, i, j));
    if (p.alibi) x -= slope * double(m.distance(i, j));
    scores[j] = x;
    if (x > mx) mx = x;
  }
  return mx;
}

// Softmax in place over scores; returns the logsumexp (-inf for an empty row,
// whose probabilities are all zero).
double softmax_row(std::vector<double>& scores, std::int64_t n, double mx) {
  if (mx == -std::numeric_limits<double>::infinity()) {
    for (std::int64_t j = 0; j < n; ++j) scores[j] = 0;
    return mx;
  }
  double sum = 0;
  for (std::int64_t j = 0; j < n; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
  for (std::int64_t j = 0; j < n; ++j) scores[j] /= sum;
  return mx + std::log(sum);
}

}  // namespace

void reference_forward(const ForwardParams& p) {
  const int d = p.head_dim;
#pragma omp parallel
  {
    std::vector<double> qrow(d), acc(d), scores(std::size_t(p.seqlen_k > 0 ? p.seqlen_k : 1));
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b) {
      for (int h = 0; h < p.heads_q; ++h) {
        const SequenceView s = sequence(p, b);
        if (std::int64_t(scores.size()) < s.len_k) scores.resize(s.len_k);
        const Mask m = make_mask(p, s);
        const int hk = kv_head(p, h);
        for (std::int64_t i = 0; i < s.len_q; ++i) {
          const double mx = row_scores(p, b, h, s, m, i, qrow, scores);
          const double lse = softmax_row(scores, s.len_k, mx);
          std::fill(acc.begin(), acc.end(), 0.0);
          for (std::int64_t j = 0; j < s.len_k; ++j) {
            if (scores[j] == 0) continue;
            const std::int64_t vo = operand_offset(p.v_strides, b, s.k_row0, j, hk);
            for (int c = 0; c < d; ++c) acc[c] += scores[j] * load_as_float(p.v, p.dtype, vo + c);
          }
          const std::int64_t oo = operand_offset(p.out_strides, b, s.q_row0, i, h);
          for (int c = 0; c < d; ++c) store_from_float(p.out, p.dtype, oo + c, float(acc[c]));
          p.lse[lse_offset(p, b, s.q_row0, i, h)] = float(lse);
        }
      }
    }
  }
}

void reference_backward(const BackwardParams& p) {
  const int d = p.head_dim;
  const int group = p.heads_q / p.heads_kv;
  // dbias accumulates across batches/heads when broadcast, so it is reduced
  // serially per (bias batch, bias head) slot below.
  const std::int64_t dbias_slots = p.dbias ? std::int64_t(p.dbias_batch_size) * p.dbias_heads_size : 0;
  std::vector<std::vector<double>> dbias_acc(static_cast<std::size_t>(dbias_slots));
  for (auto& a : dbias_acc) a.assign(std::size_t(p.seqlen_q * p.seqlen_k), 0.0);

#pragma omp parallel
  {
    std::vector<double> qrow(d), scores(std::size_t(p.seqlen_k > 0 ? p.seqlen_k : 1)), dprow(scores.size());
    std::vector<double> dorow(d), dqrow(d), dk, dv;
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b) {
      for (int hk = 0; hk < p.heads_kv; ++hk) {
        const SequenceView s = sequence(p, b);
        if (std::int64_t(scores.size()) < s.len_k) {
          scores.resize(s.len_k);
          dprow.resize(s.len_k);
        }
        const Mask m = make_mask(p, s);
        dk.assign(std::size_t(s.len_k * d), 0.0);
        dv.assign(std::size_t(s.len_k * d), 0.0);
        for (int h = hk * group; h < (hk + 1) * group; ++h) {
          for (std::int64_t i = 0; i < s.len_q; ++i) {
            const double mx = row_scores(p, b, h, s, m, i, qrow, scores);
            // Keep the capped scores for the softcap derivative before softmax overwrites them.
            std::vector<double> capped;
            if (p.softcap > 0) {
              capped.assign(scores.begin(), scores.begin() + s.len_k);
              const double slope_i = alibi_slope(p, b, h);
              for (std::int64_t j = 0; j < s.len_k; ++j) {
                if (!m.visible(i, j)) continue;
                if (p.bias) capped[j] -= load_as_float(p.bias, p.bias_dtype, bias_offset(p, b, h, i, j));
                if (p.alibi) capped[j] += slope_i * double(m.distance(i, j));
              }
            }
            softmax_row(scores, s.len_k, mx);
            const std::int64_t doo = operand_offset(p.dout_strides, b, s.q_row0, i, h);
            for (int c = 0; c < d; ++c) dorow[c] = load_as_float(p.dout, p.dtype, doo + c);
            double D = 0;
            for (std::int64_t j = 0; j < s.len_k; ++j) {
              if (scores[j] == 0) {
                dprow[j] = 0;
                continue;
              }
              const std::int64_t vo = operand_offset(p.v_strides, b, s.k_row0, j, hk);
              double dp = 0;
              for (int c = 0; c < d; ++c) dp += dorow[c] * load_as_float(p.v, p.dtype, vo + c);
              dprow[j] = dp;
              D += scores[j] * dp;
            }
            std::fill(dqrow.begin(), dqrow.end(), 0.0);
            std::vector<double>* dbias_row = nullptr;
            if (p.dbias) {
              const int bb = p.dbias_batch_size == 1 ? 0 : b;
              const int bh = p.dbias_heads_size == 1 ? 0 : h;
              dbias_row = &dbias_acc[std::size_t(bb * p.dbias_heads_size + bh)];
            }
            for (std::int64_t j = 0; j < s.len_k; ++j) {
              const double pij = scores[j];
              if (pij == 0) continue;
              const double ds = pij * (dprow[j] - D);  // d loss / d (score after cap, with bias)
              if (dbias_row) {
#pragma omp atomic
                (*dbias_row)[std::size_t(i * p.seqlen_k + j)] += ds;
              }
              const double dx = ds * (p.softcap > 0 ? softcap_derivative<double>(capped[j], p.softcap) : 1.0) *
                                double(p.scale);
              const std::int64_t ko = operand_offset(p.k_strides, b, s.k_row0, j, hk);
              for (int c = 0; c < d; ++c) {
                dqrow[c] += dx * load_as_float(p.k, p.dtype, ko + c);
                dk[std::size_t(j * d + c)] += dx * qrow[c];
                dv[std::size_t(j * d + c)] += pij * dorow[c];
              }
            }
            const std::int64_t dqo = operand_offset(p.dq_strides, b, s.q_row0, i, h);
            for (int c = 0; c < d; ++c) store_from_float(p.dq, p.dtype, dqo + c, float(dqrow[c]));
          }
        }
        for (std::int64_t j = 0; j < s.len_k; ++j) {
          const std::int64_t dko = operand_offset(p.dk_strides, b, s.k_row0, j, hk);
          const std::int64_t dvo = operand_offset(p.dv_strides, b, s.k_row0, j, hk);
          for (int c = 0; c < d; ++c) {
            store_from_float(p.dk, p.dtype, dko + c, float(dk[std::size_t(j * d + c)]));
            store_from_float(p.dv, p.dtype, dvo + c, float(dv[std::size_t(j * d + c)]));
          }
        }
      }
    }
  }
  for (int bb = 0; bb < p.dbias_batch_size && p.dbias; ++bb)
    for (int bh = 0; bh < p.dbias_heads_size; ++bh) {
      const auto& acc = dbias_acc[std::size_t(bb * p.dbias_heads_size + bh)];
      for (std::int64_t i = 0; i < p.seqlen_q; ++i)
        for (std::int64_t j = 0; j < p.seqlen_k; ++j)
          store_from_float(p.dbias, p.bias_dtype, bb * p.dbias_batch + bh * p.dbias_head + i * p.dbias_row + j,
                           float(acc[std::size_t(i * p.seqlen_k + j)]));
    }
}

}  // namespace flashattn::detail::cpu
