// Checking results against the fp64 reference (Backend::cpu_reference), with
// the tolerance rule of the project:
//   fp32:      max |got - ref| <= 1e-4 * max |ref| + 1e-6
//   fp16/bf16: max |got - ref| <= 2 * max |naive - ref| + 2 ulps of the dtype at
//              max |ref|, where `naive` is attention computed the plain way (scores,
//              softmax, products) rounded to that dtype after every step, as a
//              framework's math path does (flash_attn's rule). The same rule as the
//              test suite (tests/support/check.cpp).
#pragma once
#include <string>
#include <vector>

#include "problem.hpp"

namespace cli {

inline constexpr double kFp32RelTol = 1e-4;
inline constexpr double kFp32AbsTol = 1e-6;
// Units in the last place of dtype at magnitude x.
double ulp(DType dtype, double x);

// The reference outputs of a problem (fp32 holders of fp64 results).
Outputs reference(const Inputs& in, bool backward, bool dbias);
// Plain attention in the problem's own precision (values rounded to its dtype,
// held in fp32 tensors). Only meaningful for fp16/bf16.
Outputs naive_lowp(const Inputs& in, bool backward, bool dbias);

// Error statistics of one output, accumulated over one or many comparisons.
struct ErrorStat {
  std::string name;
  double err = 0;      // max |got - ref|
  double naive = 0;    // max |naive - ref|
  double ref_max = 0;  // max |ref| (finite values)
  double rel() const { return ref_max > 0 ? err / ref_max : err; }
  void add(const Tensor& got, const Tensor& ref, const Tensor* naive);
  double bound(DType dtype) const;
  bool pass(DType dtype) const;
};

// One problem checked: forward O/lse (and dQ/dK/dV/dBias).
struct CheckResult {
  std::vector<ErrorStat> stats;
  bool pass(DType dtype) const;
  // The stat closest to (or furthest past) its bound.
  const ErrorStat& worst(DType dtype) const;
};

// Compares got to reference (and naive when low precision) over whole tensors.
CheckResult compare(const Outputs& got, const Outputs& ref, const Outputs* naive, bool backward);

// A query row of the full problem.
struct RowSample {
  int b = 0, h = 0;
  std::int64_t i = 0;
};
// `count` rows spread over batches, heads and positions (first and last rows included).
std::vector<RowSample> sample_rows(const Spec& s, int count, std::mt19937_64& rng);

// The problem of one query row alone: its visible keys sliced out of K/V, its
// bias row and ALiBi terms folded into one fp32 bias over those keys, no mask.
// It sees exactly the keys and scores the row sees in the full problem.
Inputs row_problem(const Inputs& full, const RowSample& r);

// Forward (and dQ) of sampled rows of `got` (the full problem's outputs) against
// the reference on each row's own problem.
CheckResult check_rows(const Inputs& full, const Outputs& got, const std::vector<RowSample>& rows,
                       bool backward_dq);

// The sub-problem of batch b and kv head hk with its group of query heads (all
// rows), and the same block of the full outputs.
Inputs head_slice(const Inputs& full, int b, int hk);
Outputs head_slice(const Outputs& got, const Spec& s, int b, int hk);

}  // namespace cli
