// An attention problem as the CLI builds it: sizes and options (Spec), host
// inputs, host outputs, and a Session that places them on a device and calls
// the public API.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tensor.hpp"

namespace cli {

using flashattn::Alignment;
using flashattn::Backend;

enum class BiasKind { none, full, per_head, per_batch, shared };  // (B,H), (1,H), (B,1), (1,1) leading dims

struct Spec {
  int batch = 2;
  int heads = 16;
  int heads_k = 16;
  int head_dim = 128;
  std::int64_t seqlen_q = 2048;  // varlen: the maximum
  std::int64_t seqlen_k = 2048;
  DType dtype = DType::bf16;
  bool causal = true;
  Alignment alignment = Alignment::bottom_right;
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  float softcap = 0.0f;
  std::optional<float> scale;
  BiasKind bias = BiasKind::none;
  bool alibi = false;
  bool alibi_per_batch = false;
  // Varlen batches: per-sequence lengths (empty for fixed-length batches).
  std::vector<std::int64_t> lens_q, lens_k;

  bool varlen() const { return !lens_q.empty(); }
  std::int64_t len_q(int b) const { return varlen() ? lens_q[std::size_t(b)] : seqlen_q; }
  std::int64_t len_k(int b) const { return varlen() ? lens_k[std::size_t(b)] : seqlen_k; }
  std::int64_t row0_q(int b) const;  // first row of sequence b in the packed (varlen) layout
  std::int64_t row0_k(int b) const;
  std::int64_t total_q() const;
  std::int64_t total_k() const;
  float softmax_scale() const;
  std::string describe() const;  // "B=2 H=16 Hk=16 Sq=2048 Sk=2048 D=128 causal(bottom-right)"
};

// The keys [begin, end) that query row i of a sequence sees (the mask semantics
// of attention.hpp, written out independently of the library).
struct KeyRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t count() const { return end > begin ? end - begin : 0; }
};
KeyRange visible_keys(const Spec& s, std::int64_t len_q, std::int64_t len_k, std::int64_t i);
// Key aligned with query i (for ALiBi distances).
std::int64_t diagonal(const Spec& s, std::int64_t len_q, std::int64_t len_k, std::int64_t i);

// Forward FLOPs, FlashAttention papers' convention: 4*Sq*Sk*D per head, halved for
// a causal mask; with a sliding window only the visible pairs are counted.
double forward_flops(const Spec& s);

struct Inputs {
  Spec spec;
  Tensor q, k, v, dout;
  std::optional<Tensor> bias, alibi, cu_q, cu_k;
};

struct Outputs {
  Tensor out, lse, dq, dk, dv;
  std::optional<Tensor> dbias;
};

// Shapes (layout (B, S, H, D), or (total, H, D) for varlen).
std::vector<std::int64_t> q_shape(const Spec& s);
std::vector<std::int64_t> kv_shape(const Spec& s);
std::vector<std::int64_t> lse_shape(const Spec& s);
std::vector<std::int64_t> bias_shape(const Spec& s);

// Fresh random inputs: q, k, v, dout ~ N(0, 1), bias ~ N(0, 1), ALiBi slopes
// 2^(-8(h+1)/H) (scaled per batch when per-batch).
Inputs random_inputs(const Spec& s, std::mt19937_64& rng, bool with_dout);
Tensor alibi_slopes(const Spec& s);
// Host output holders in `dtype` (lse always fp32).
Outputs make_outputs(const Spec& s, DType dtype, bool backward, bool dbias);
// All inputs converted to fp32 (what the fp64 reference is fed).
Inputs to_fp32(const Inputs& in);

// Copy of a sub-block of a contiguous tensor: start and size per dimension.
Tensor block(const Tensor& t, const std::vector<std::int64_t>& start, const std::vector<std::int64_t>& size);

// A problem placed on a device, ready to be run many times.
class Session {
 public:
  Session(const Inputs& in, Device device, Backend backend, int threads, bool backward, bool dbias);
  flashattn::Result forward();
  flashattn::Result backward();  // uses the out/lse of the last forward
  void synchronize() { mem_.synchronize(); }
  // Poisons the outputs (NaN) so that a check sees only what the next call writes.
  void poison_outputs();
  Outputs fetch(bool backward);
  Device device() const { return mem_.device(); }

 private:
  const Inputs& in_;
  Placement mem_;
  bool backward_ = false, dbias_ = false;
  Outputs host_;
  TensorView q_, k_, v_, out_, lse_, dout_, dq_, dk_, dv_;
  std::optional<TensorView> dbias_view_;
  flashattn::Options opt_;
};

}  // namespace cli
