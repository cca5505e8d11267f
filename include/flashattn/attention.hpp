// The public entry points: forward and backward attention.
//
// Layouts (strides are free; the head-dim stride must be 1):
//   fixed length  q (batch, seqlen_q, heads, headdim), k/v (batch, seqlen_k, heads_k, headdim)
//                 out like q; lse fp32 (batch, heads, seqlen_q)
//   varlen        q (total_q, heads, headdim), k/v (total_k, heads_k, headdim),
//                 cu_seqlens_q/k int32 (batch + 1); lse fp32 (heads, total_q)
// A (batch, heads, seqlen, headdim) tensor is passed as a view with permuted strides.
#pragma once
#include <cstdint>
#include <optional>

#include "flashattn/tensor.hpp"

namespace flashattn {

// Where key j lines up with query i when seqlen_q != seqlen_k.
//   bottom_right: query i sits at key i + seqlen_k - seqlen_q (flash_attn's convention)
//   top_left:     query i sits at key i (PyTorch SDPA's is_causal)
// The same diagonal anchors causal masks, sliding windows and ALiBi distances.
enum class Alignment : std::uint8_t { bottom_right, top_left };

// Which implementation runs. `automatic` picks the fastest one that supports the call.
enum class Backend : std::uint8_t {
  automatic,
  cpu_reference,  // naive O(N^2), fp64 accumulation: the oracle for tests
  cpu_flash,      // FlashAttention-2 on CPU threads
  cuda_portable,  // SIMT kernel, sm_75+
  cuda_sm80,      // mma.sync tensor-core kernel, sm_80+
  cuda_sm90,      // wgmma/TMA kernel, sm_90a
};
const char* backend_name(Backend b);

struct Options {
  std::optional<float> softmax_scale;  // default 1/sqrt(headdim)
  bool causal = false;
  Alignment alignment = Alignment::bottom_right;
  // Sliding window around the aligned diagonal: key j is visible to query i when
  // diag(i) - window_left <= j <= diag(i) + window_right. -1 means unbounded.
  // causal is the same as window_right = 0.
  int window_left = -1;
  int window_right = -1;
  float softcap = 0.0f;  // > 0: scores become softcap * tanh(scores / softcap)

  // Additive bias, (batch or 1, heads or 1, seqlen_q, seqlen_k), any dtype of q's family.
  // Varlen: (batch or 1, heads or 1, max_seqlen_q, max_seqlen_k), indexed by in-sequence
  // positions. Size-1 dimensions broadcast.
  std::optional<TensorView> bias;
  // ALiBi: fp32 (heads) or (batch, heads); adds -slope * |diag(i) - j| to the scores.
  std::optional<TensorView> alibi_slopes;

  // Variable-length batches.
  std::optional<TensorView> cu_seqlens_q;  // DType::i32 (batch + 1), non-decreasing from 0
  std::optional<TensorView> cu_seqlens_k;
  std::int64_t max_seqlen_q = 0;
  std::int64_t max_seqlen_k = 0;

  Backend backend = Backend::automatic;
  bool deterministic = false;  // bitwise-reproducible backward
  void* stream = nullptr;      // cudaStream_t for CUDA backends
  int num_threads = 0;         // CPU threads; 0 = all cores
};

struct Result {
  Backend backend;  // which implementation ran
};

// O = softmax(scale * Q K^T [softcapped] + bias + alibi, masked) V, and the
// natural-log logsumexp of each row's scores. Rows with no visible key give
// O = 0 and lse = -inf. out and lse are caller-allocated.
Result forward(const TensorView& q, const TensorView& k, const TensorView& v,
               const TensorView& out, const TensorView& lse, const Options& options = {});

// Gradients from the saved output and logsumexp. dbias, when given, receives the
// bias gradient reduced over the bias's broadcast dimensions (same shape as bias).
Result backward(const TensorView& q, const TensorView& k, const TensorView& v,
                const TensorView& out, const TensorView& dout, const TensorView& lse,
                const TensorView& dq, const TensorView& dk, const TensorView& dv,
                const Options& options = {},
                const std::optional<TensorView>& dbias = std::nullopt);

// Whether a backend can run this call, with the reason when it cannot.
struct Support {
  bool ok;
  const char* reason;
};
Support supports(Backend backend, const TensorView& q, const TensorView& k, const TensorView& v,
                 const Options& options = {});

// Backends compiled into this build and usable on this machine now.
bool backend_available(Backend backend);

}  // namespace flashattn
