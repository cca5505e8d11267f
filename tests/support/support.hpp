// Test support shared by the CPU and GPU suites: host tensors with free strides,
// random problems described by a `Case`, the naive same-precision computation,
// and the one tolerance rule (`check`).
//
// GPU tests: allocate device memory of `t.storage_bytes()`, copy `t.data()` over,
// build the view with `t.view_on(device_ptr, device)`, run, copy back into a
// HostTensor from `alloc_outputs` (same strides) and call `check`.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "flashattn/flashattn.hpp"

namespace fa_test {

using flashattn::Alignment;
using flashattn::Backend;
using flashattn::DType;

// ---------------------------------------------------------------------------
// Host tensors

// Owns (or, for `wrap`, borrows) host memory and exposes a TensorView onto it.
// Shapes are logical (e.g. (batch, seqlen, heads, dim)); strides may be any
// permutation, with optional padding, so one logical layout can sit in memory
// as (batch, heads, seqlen, dim).
class HostTensor {
 public:
  HostTensor() = default;
  // `order` lists logical dimensions from outermost to innermost in memory
  // (empty: row-major). `pad` extra elements are added to the stride of the
  // second-innermost memory dimension (non-contiguous rows).
  static HostTensor make(DType dtype, std::vector<std::int64_t> shape,
                         std::vector<int> order = {}, std::int64_t pad = 0);
  // A view onto memory the caller owns (e.g. an mmap'ed region); not freed here.
  static HostTensor wrap(void* data, DType dtype, std::vector<std::int64_t> shape,
                         std::vector<std::int64_t> strides);

  HostTensor(const HostTensor& other);
  HostTensor(HostTensor&& other) noexcept;
  HostTensor& operator=(const HostTensor& other);
  HostTensor& operator=(HostTensor&& other) noexcept;

  flashattn::TensorView view;  // onto this tensor's storage (host)

  bool defined() const { return view.rank > 0; }
  DType dtype() const { return view.dtype; }
  int rank() const { return view.rank; }
  std::int64_t size(int dim) const { return view.shape[dim]; }
  std::int64_t numel() const { return view.numel(); }

  // Raw storage: everything the strides can reach (gaps included).
  void* data() { return view.data; }
  const void* data() const { return view.data; }
  std::size_t storage_bytes() const { return storage_elems_ * flashattn::dtype_size(view.dtype); }
  // The same shape and strides onto another pointer (e.g. a device copy).
  flashattn::TensorView view_on(void* ptr, flashattn::Device device = {}) const;

  // Element access by logical row-major flat index or by logical multi-index.
  std::int64_t offset_of(std::int64_t flat) const;
  std::int64_t offset_of(std::initializer_list<std::int64_t> index) const;
  float get(std::int64_t flat) const;
  float at(std::initializer_list<std::int64_t> index) const;
  void set(std::int64_t flat, float x);  // rounds to the dtype (ints: truncates)
  std::vector<float> to_float_vector() const;  // logical row-major

  void poison();  // NaN of the dtype everywhere in storage (ints: 0x7fffffff)
  // Same shape and strides, fp32, values converted exactly.
  HostTensor to_f32() const;

 private:
  std::vector<unsigned char> owned_;
  std::int64_t storage_elems_ = 0;
  void rebase();
};

// ---------------------------------------------------------------------------
// Problems

enum class Layout : std::uint8_t {
  bshd,    // (batch, seqlen, heads, dim) row-major
  bhsd,    // same logical shape, stored (batch, heads, seqlen, dim)
  padded,  // bshd with gaps between rows (row stride > heads*dim)
};
enum class BiasKind : std::uint8_t { none, full, bcast_batch, bcast_heads, bcast_both };
enum class AlibiKind : std::uint8_t { none, per_head, per_batch_head };

const char* layout_name(Layout l);
const char* bias_name(BiasKind b);
const char* alibi_name(AlibiKind a);

struct Case {
  int batch = 2;
  int heads_q = 2;
  int heads_kv = 2;
  int head_dim = 32;
  std::int64_t seqlen_q = 17;
  std::int64_t seqlen_k = 17;
  DType dtype = DType::f32;
  Layout layout = Layout::bshd;
  bool causal = false;
  Alignment alignment = Alignment::bottom_right;
  int window_left = -1;
  int window_right = -1;
  float softcap = 0.0f;
  std::optional<float> scale;
  BiasKind bias = BiasKind::none;
  bool bias_f32 = false;   // bias stored in fp32 instead of q's dtype
  bool bias_grad = false;  // request dbias in backward
  AlibiKind alibi = AlibiKind::none;
  // Varlen when non-empty: one length per sequence (zeros allowed); batch,
  // seqlen_q and seqlen_k are then derived (max lengths).
  std::vector<int> varlen_q;
  std::vector<int> varlen_k;
  int varlen_pad_rows = 0;  // extra rows past the last sequence (never touched)
  std::optional<std::uint64_t> seed;

  bool varlen() const { return !varlen_q.empty(); }
  // A readable, gtest-safe name ([A-Za-z0-9_] only).
  std::string name() const;
};

struct Problem {
  Case c;
  std::uint64_t seed = 0;
  int batch = 0;
  std::int64_t max_seqlen_q = 0, max_seqlen_k = 0;  // == seqlen_q/k in fixed mode
  std::int64_t total_q = 0, total_k = 0;            // rows of q/k (varlen incl. padding)
  HostTensor q, k, v, dout;
  HostTensor bias;          // undefined when none
  HostTensor alibi;         // undefined when none
  HostTensor cu_q, cu_k;    // undefined in fixed mode

  // Options for this problem; `map` (if given) turns each host tensor into the
  // view the call should use (e.g. its device copy).
  flashattn::Options options(
      Backend backend,
      const std::function<flashattn::TensorView(const HostTensor&)>& map = {}) const;
  // "name seed=N" for failure messages; rerun with FLASHATTN_TEST_SEED=N.
  std::string describe() const;
  // Per logical element of an output like `which` ("out", "lse", "dq", "dk",
  // "dv", "dbias"): 1 where it belongs to the problem. Empty: all do.
  std::vector<char> valid_mask(const std::string& which) const;
};

// Fresh random inputs each call unless c.seed (or env FLASHATTN_TEST_SEED) is set.
Problem make_problem(const Case& c);

struct Outputs {
  HostTensor out, lse, dq, dk, dv, dbias;
};

// Outputs laid out like the inputs (lse contiguous), poisoned with NaN.
// dtype: the outputs' dtype (default: the problem's).
Outputs alloc_outputs(const Problem& p, bool backward, std::optional<DType> dtype = std::nullopt);

// Forward (and backward from that forward's out/lse) through the public API on the CPU.
Outputs run(const Problem& p, Backend backend, bool backward);
// The fp64 reference on fp32 copies of the (already rounded) inputs: for fp16/bf16
// problems this avoids rounding the oracle's outputs back to the low precision.
Outputs run_reference(const Problem& p, bool backward);
// The naive attention computed as a framework's math path does, in the problem's
// dtype (see naive.cpp). The "same precision" baseline of the fp16/bf16 rule.
Outputs run_naive_low_precision(const Problem& p, bool backward);

// ---------------------------------------------------------------------------
// Tolerance

// fp32 rule: max|ours-ref| <= rtol*max|ref| + atol.
struct Fp32Tolerance {
  double rtol;
  double atol;
};
Fp32Tolerance fp32_tolerance(const char* what);
// Units in the last place of dtype at magnitude x (>= its smallest normal ulp).
double ulp(DType dtype, double x);

struct Verdict {
  bool ok = true;
  std::string what;
  double max_err = 0;    // max |ours - ref| over compared elements
  double bound = 0;      // allowed
  double max_ref = 0;    // max |ref|
  double naive_err = -1; // max |naive - ref| (-1: not used)
  std::int64_t worst = -1;   // logical flat index of max_err
  std::int64_t compared = 0;
  std::int64_t bad_nan = 0;  // NaN/inf where a finite value was expected
  std::string detail;        // first failing element, in words
  std::string message() const;
};
std::ostream& operator<<(std::ostream& os, const Verdict& v);

// The one rule. `dtype` selects it: f32 -> relative rule; f16/bf16 -> 2x the
// naive same-precision error plus a few ulps (naive must then be non-null).
// lse: -inf in the reference must be exactly -inf in ours. `mask` (same length
// as numel, optional) selects the elements that belong to the problem.
Verdict check(const char* what, const HostTensor& ours, const HostTensor& ref_fp64,
              const HostTensor* naive_same_precision, DType dtype,
              const std::vector<char>* mask = nullptr);

// Every output of a run against the reference (and naive for fp16/bf16).
std::vector<Verdict> check_outputs(const Problem& p, const Outputs& ours, const Outputs& ref,
                                   const Outputs* naive, bool backward);

}  // namespace fa_test
