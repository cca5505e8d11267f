// The flat parameter structs every backend reads. The public API fills them once,
// after validation; backends may assume everything here is consistent.
#pragma once
#include <cstdint>

#include "flashattn/tensor.hpp"

#if defined(__CUDACC__)
#define FA_HD __host__ __device__ __forceinline__
#else
#define FA_HD inline
#endif

namespace flashattn::detail {

// Element strides of a (rows, heads, headdim) operand inside one batch; the
// headdim stride is always 1.
struct OperandStrides {
  std::int64_t batch = 0;  // 0 in varlen mode: rows are located through cu_seqlens
  std::int64_t row = 0;
  std::int64_t head = 0;
};

struct ForwardParams {
  DType dtype = DType::f32;  // of q, k, v, out (and dout, dq, dk, dv)
  int batch = 0;
  int heads_q = 0;
  int heads_kv = 0;
  int head_dim = 0;
  std::int64_t seqlen_q = 0;  // fixed mode: every sequence; varlen: max_seqlen_q
  std::int64_t seqlen_k = 0;
  std::int64_t total_q = 0;   // rows in q: batch * seqlen_q, or total tokens in varlen
  std::int64_t total_k = 0;

  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  OperandStrides q_strides, k_strides, v_strides, out_strides;
  // lse element (b, h, i) is at b*lse_batch + h*lse_head + i*lse_row; in varlen mode
  // lse_batch is 0 and i counts from cu_seqlens_q[b].
  std::int64_t lse_batch = 0, lse_head = 0, lse_row = 0;

  const std::int32_t* cu_seqlens_q = nullptr;  // null in fixed mode
  const std::int32_t* cu_seqlens_k = nullptr;

  float scale = 1.0f;
  float softcap = 0.0f;  // 0: off
  // Window around the aligned diagonal; -1 means unbounded. Causal sets right = 0.
  std::int64_t window_left = -1;
  std::int64_t window_right = -1;
  bool align_top_left = false;

  const void* bias = nullptr;  // null: no bias
  DType bias_dtype = DType::f32;
  std::int64_t bias_batch = 0, bias_head = 0, bias_row = 0;  // 0 = broadcast; col stride 1
  const float* alibi = nullptr;  // null: no ALiBi
  std::int64_t alibi_batch = 0;  // 0 when slopes are per head only

  int num_threads = 0;  // CPU
  void* stream = nullptr;  // cudaStream_t
};

struct BackwardParams : ForwardParams {
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  OperandStrides dout_strides, dq_strides, dk_strides, dv_strides;
  void* dbias = nullptr;  // null: not requested; same dtype and broadcast shape as bias
  int dbias_batch_size = 0;  // 1 or batch
  int dbias_heads_size = 0;  // 1 or heads_q
  std::int64_t dbias_batch = 0, dbias_head = 0, dbias_row = 0;
  bool deterministic = false;
};

// Where one sequence of the batch lives.
struct SequenceView {
  std::int64_t q_row0 = 0;  // first row of this sequence in q/out (varlen) or 0
  std::int64_t k_row0 = 0;
  std::int64_t len_q = 0;
  std::int64_t len_k = 0;
};

FA_HD SequenceView sequence(const ForwardParams& p, int b) {
  SequenceView s;
  if (p.cu_seqlens_q != nullptr) {
    s.q_row0 = p.cu_seqlens_q[b];
    s.k_row0 = p.cu_seqlens_k[b];
    s.len_q = p.cu_seqlens_q[b + 1] - s.q_row0;
    s.len_k = p.cu_seqlens_k[b + 1] - s.k_row0;
  } else {
    s.len_q = p.seqlen_q;
    s.len_k = p.seqlen_k;
  }
  return s;
}

// Element offset of row `row` (within sequence b) and head h of an operand.
FA_HD std::int64_t operand_offset(const OperandStrides& st, int b, std::int64_t row0,
                                  std::int64_t row, int h) {
  return b * st.batch + (row0 + row) * st.row + h * st.head;
}

FA_HD std::int64_t lse_offset(const ForwardParams& p, int b, std::int64_t row0, std::int64_t row,
                              int h) {
  return b * p.lse_batch + h * p.lse_head + (row0 + row) * p.lse_row;
}

FA_HD int kv_head(const ForwardParams& p, int h) { return h / (p.heads_q / p.heads_kv); }

}  // namespace flashattn::detail
