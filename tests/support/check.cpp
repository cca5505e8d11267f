// The tolerance rule, in one place.
//
// fp32: max|ours - ref| <= rtol * max|ref| + atol, rtol = 1e-4, atol = 3e-5.
//   Every backend accumulates in fp32 (eps = 2^-23 ~ 1.2e-7). The longest sums in
//   the suite have ~1e3 terms (seqlen 1000, or dK/dV over a GQA group), whose
//   worst-case rounding error grows like n*eps ~ 1.2e-4 of the summed magnitudes;
//   typical growth is sqrt(n)*eps ~ 4e-6. 1e-4 of the largest |ref| sits between
//   the two, far below any real bug (a wrong mask or scale moves results by O(1)).
// The absolute floor (kFloor = 3e-5, for every dtype) covers outputs whose exact
//   value is 0: when a row sees a single key, dS = P (dP - D) cancels exactly in
//   exact arithmetic, but FlashAttention-2 computes D = rowsum(dO * O) from the
//   stored O, so dQ/dK come out at eps_fp32 * sum|dO * O| * sqrt(rows) ~ 1e-6..1e-5
//   for the suite's unit-variance inputs, while the reference gives exact zeros.
// fp16/bf16 (flash_attn's rule): max|ours - ref| <= 2 * max|naive - ref| + atol,
//   naive = the same attention computed in the same precision the way a
//   framework's math path does (naive.cpp; its backward takes D = rowsum(dO * O)
//   from the saved O in the dtype, as every backward given O must), ref = fp64
//   math on the same rounded inputs. atol = 2 ulps of the dtype at max|ref| (both sides round their final
//   result to the dtype, which alone costs up to half an ulp each) + kFloor.
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "support.hpp"

namespace fa_test {

constexpr double kFloor = 3e-5;

Fp32Tolerance fp32_tolerance(const char* /*what*/) { return {1e-4, kFloor}; }

double ulp(DType dtype, double x) {
  int mant = 23, min_exp = -126;
  if (dtype == DType::f16) mant = 10, min_exp = -14;
  if (dtype == DType::bf16) mant = 7, min_exp = -126;
  int e = x > 0 ? int(std::floor(std::log2(x))) : min_exp;
  if (e < min_exp) e = min_exp;
  return std::ldexp(1.0, e - mant);
}

namespace {

std::string index_str(const HostTensor& t, std::int64_t flat) {
  std::vector<std::int64_t> idx(std::size_t(t.rank()));
  for (int d = t.rank() - 1; d >= 0; --d) {
    idx[std::size_t(d)] = flat % t.size(d);
    flat /= t.size(d);
  }
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < idx.size(); ++i) s << (i ? "," : "") << idx[i];
  s << ']';
  return s.str();
}

}  // namespace

Verdict check(const char* what, const HostTensor& ours, const HostTensor& ref,
              const HostTensor* naive, DType dtype, const std::vector<char>* mask) {
  Verdict v;
  v.what = what;
  const std::int64_t n = ref.numel();
  auto fail = [&](const std::string& why) {
    if (v.ok) v.detail = why;
    v.ok = false;
  };
  if (ours.numel() != n || (naive && naive->numel() != n)) {
    fail("element counts differ");
    return v;
  }
  const bool low = dtype == DType::f16 || dtype == DType::bf16;
  if (low && naive == nullptr) {
    fail("fp16/bf16 rule needs the naive same-precision result");
    return v;
  }
  if (low) v.naive_err = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (mask && !mask->empty() && !(*mask)[std::size_t(i)]) continue;
    ++v.compared;
    const double r = ref.get(i), o = ours.get(i);
    if (std::isnan(r)) {
      fail("reference is NaN at " + index_str(ref, i));
      continue;
    }
    if (std::isinf(r)) {  // only -inf lse is legitimate: must match exactly
      if (o != r) {
        ++v.bad_nan;
        std::ostringstream s;
        s << "at " << index_str(ref, i) << " ref=" << r << " but ours=" << o;
        fail(s.str());
      }
      continue;
    }
    if (!std::isfinite(o)) {
      ++v.bad_nan;
      std::ostringstream s;
      s << "at " << index_str(ref, i) << " ours=" << o << " where ref=" << r;
      fail(s.str());
      continue;
    }
    v.max_ref = std::max(v.max_ref, std::fabs(r));
    const double err = std::fabs(o - r);
    if (err > v.max_err) {
      v.max_err = err;
      v.worst = i;
    }
    if (low) {
      const double nv = naive->get(i);
      v.naive_err = std::max(v.naive_err, std::isfinite(nv) ? std::fabs(nv - r) : 0.0);
    }
  }
  if (low) {
    v.bound = 2.0 * v.naive_err + 2.0 * ulp(dtype, v.max_ref) + kFloor;
  } else {
    const Fp32Tolerance t = fp32_tolerance(what);
    v.bound = t.rtol * v.max_ref + t.atol;
  }
  if (v.max_err > v.bound) {
    std::ostringstream s;
    s << std::setprecision(6) << "worst at " << index_str(ref, v.worst) << ": ours=" << ours.get(v.worst)
      << " ref=" << ref.get(v.worst);
    if (low) s << " naive=" << naive->get(v.worst);
    fail(s.str());
  }
  return v;
}

std::string Verdict::message() const {
  std::ostringstream s;
  s << std::setprecision(4) << what << (ok ? ": ok" : ": FAIL") << " max|err|=" << max_err
    << " bound=" << bound;
  if (naive_err >= 0) s << " (2*naive " << naive_err << " + 2ulp + floor)";
  s << " max|ref|=" << max_ref << " compared=" << compared;
  if (bad_nan) s << " non-finite=" << bad_nan;
  if (!detail.empty()) s << " | " << detail;
  return s.str();
}

std::ostream& operator<<(std::ostream& os, const Verdict& v) { return os << v.message(); }

std::vector<Verdict> check_outputs(const Problem& p, const Outputs& ours, const Outputs& ref,
                                   const Outputs* naive, bool backward) {
  const DType dt = p.c.dtype;
  const bool low = dt != DType::f32;
  std::vector<Verdict> r;
  auto one = [&](const char* what, const HostTensor Outputs::*field) {
    const std::vector<char> mask = p.valid_mask(what);
    r.push_back(check(what, ours.*field, ref.*field, low && naive ? &(naive->*field) : nullptr, dt, &mask));
  };
  one("out", &Outputs::out);
  one("lse", &Outputs::lse);
  if (backward) {
    one("dq", &Outputs::dq);
    one("dk", &Outputs::dk);
    one("dv", &Outputs::dv);
    if (ref.dbias.defined()) one("dbias", &Outputs::dbias);
  }
  return r;
}

}  // namespace fa_test
