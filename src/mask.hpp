// Masking and score shaping: the one definition of which keys a query sees and
// what is added to its scores. Shared by every backend (host and device).
#pragma once
#include <cmath>
#include <cstdint>

#include "params.hpp"

namespace flashattn::detail {

// The visible key range [begin, end) of each query row of one sequence.
struct Mask {
  std::int64_t diag = 0;   // key index aligned with query 0
  std::int64_t left = -1;  // -1: unbounded
  std::int64_t right = -1;
  std::int64_t len_k = 0;

  FA_HD std::int64_t key_begin(std::int64_t i) const {
    if (left < 0) return 0;
    const std::int64_t b = i + diag - left;
    return b < 0 ? 0 : b;
  }
  FA_HD std::int64_t key_end(std::int64_t i) const {
    if (right < 0) return len_k;
    const std::int64_t e = i + diag + right + 1;
    return e < 0 ? 0 : (e > len_k ? len_k : e);
  }
  FA_HD bool visible(std::int64_t i, std::int64_t j) const {
    return j >= key_begin(i) && j < key_end(i);
  }
  // Signed distance used by ALiBi.
  FA_HD std::int64_t distance(std::int64_t i, std::int64_t j) const {
    const std::int64_t d = i + diag - j;
    return d < 0 ? -d : d;
  }
};

FA_HD Mask make_mask(const ForwardParams& p, const SequenceView& s) {
  Mask m;
  m.diag = p.align_top_left ? 0 : s.len_k - s.len_q;
  m.left = p.window_left;
  m.right = p.window_right;
  m.len_k = s.len_k;
  return m;
}

// softcap * tanh(x / softcap), or x when the cap is off. Templated so the
// reference runs it in double.
template <typename T>
FA_HD T apply_softcap(T x, T softcap) {
  return softcap > T(0) ? softcap * std::tanh(x / softcap) : x;
}

// d(softcapped)/dx expressed through the capped value c: 1 - (c/softcap)^2.
template <typename T>
FA_HD T softcap_derivative(T capped, T softcap) {
  if (!(softcap > T(0))) return T(1);
  const T t = capped / softcap;
  return T(1) - t * t;
}

FA_HD float alibi_slope(const ForwardParams& p, int b, int h) {
  return p.alibi == nullptr ? 0.0f : p.alibi[b * p.alibi_batch + h];
}

FA_HD std::int64_t bias_offset(const ForwardParams& p, int b, int h, std::int64_t i,
                               std::int64_t j) {
  return b * p.bias_batch + h * p.bias_head + i * p.bias_row + j;
}

}  // namespace flashattn::detail
