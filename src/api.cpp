// The one way in: every argument is validated here, once, then the call is
// dispatched to a backend that may assume valid input.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "backends.hpp"
#include "flashattn/attention.hpp"
#include "flashattn/error.hpp"

namespace flashattn {

namespace {

using detail::BackwardParams;
using detail::ForwardParams;
using detail::OperandStrides;

[[noreturn]] void fail(ErrorCode code, const std::string& msg) { throw Error(code, msg); }

std::string shape_str(const TensorView& t) {
  std::ostringstream s;
  s << '(';
  for (int i = 0; i < t.rank; ++i) s << (i ? ", " : "") << t.shape[i];
  s << ')';
  return s.str();
}

const char* device_name(const Device& d) { return d.kind == DeviceKind::cpu ? "cpu" : "cuda"; }

void check_rank(const TensorView& t, const char* name, int rank, const char* layout) {
  if (t.rank != rank) {
    std::ostringstream s;
    s << name << ": expected rank " << rank << " " << layout << ", got rank " << t.rank << " "
      << shape_str(t);
    fail(ErrorCode::shape_mismatch, s.str());
  }
}

// Shapes non-negative, strides non-negative, the largest element offset and the
// element count representable in 64 bits, data present whenever there is data.
void check_extent(const TensorView& t, const char* name) {
  if (t.rank < 0 || t.rank > kMaxRank)
    fail(ErrorCode::shape_mismatch, std::string(name) + ": rank must be 0.." +
                                        std::to_string(kMaxRank));
  std::int64_t max_offset = 0;
  std::int64_t count = 1;
  bool empty = false;
  for (int i = 0; i < t.rank; ++i) {
    if (t.shape[i] < 0)
      fail(ErrorCode::shape_mismatch, std::string(name) + ": negative size in shape " + shape_str(t));
    if (t.strides[i] < 0)
      fail(ErrorCode::bad_stride, std::string(name) + ": negative stride in dimension " +
                                      std::to_string(i) + " (only non-negative strides are supported)");
    if (t.shape[i] == 0) empty = true;
  }
  if (empty) return;
  for (int i = 0; i < t.rank; ++i) {
    std::int64_t span = 0;
    if (__builtin_mul_overflow(t.shape[i] - 1, t.strides[i], &span) ||
        __builtin_add_overflow(max_offset, span, &max_offset) ||
        __builtin_mul_overflow(count, t.shape[i], &count) ||
        __builtin_mul_overflow(max_offset, std::int64_t(dtype_size(t.dtype)), &span))
      fail(ErrorCode::overflow, std::string(name) + ": shape " + shape_str(t) +
                                    " with its strides addresses more than 2^63 bytes");
  }
  if (t.data == nullptr) fail(ErrorCode::null_pointer, std::string(name) + ": data pointer is null");
}

void check_float_dtype(const TensorView& t, const char* name, DType want, const char* want_from) {
  if (t.dtype != want)
    fail(ErrorCode::dtype_mismatch, std::string(name) + ": dtype " + dtype_name(t.dtype) +
                                        " does not match " + want_from + " (" + dtype_name(want) +
                                        ")");
}

void check_same_shape(const TensorView& t, const char* name, const TensorView& ref,
                      const char* ref_name) {
  bool same = t.rank == ref.rank;
  for (int i = 0; same && i < t.rank; ++i) same = t.shape[i] == ref.shape[i];
  if (!same)
    fail(ErrorCode::shape_mismatch, std::string(name) + ": shape " + shape_str(t) +
                                        " must equal " + ref_name + "'s " + shape_str(ref));
}

void check_unit_last_stride(const TensorView& t, const char* name) {
  if (t.rank > 0 && t.shape[t.rank - 1] > 1 && t.strides[t.rank - 1] != 1)
    fail(ErrorCode::bad_stride, std::string(name) + ": the last (head-dim) stride must be 1, got " +
                                    std::to_string(t.strides[t.rank - 1]));
}

void check_device(const TensorView& t, const char* name, const Device& dev) {
  if (!(t.device == dev))
    fail(ErrorCode::device_mismatch,
         std::string(name) + ": on " + device_name(t.device) + ":" + std::to_string(t.device.index) +
             " but q is on " + device_name(dev) + ":" + std::to_string(dev.index));
}

// One operand of layout (batch, rows, heads, dim) or (total, heads, dim).
OperandStrides operand_strides(const TensorView& t, bool varlen) {
  OperandStrides s;
  if (varlen) {
    s.row = t.strides[0];
    s.head = t.strides[1];
  } else {
    s.batch = t.strides[0];
    s.row = t.strides[1];
    s.head = t.strides[2];
  }
  return s;
}

void check_operand(const TensorView& t, const char* name, bool varlen, const Device& dev) {
  check_rank(t, name, varlen ? 3 : 4,
             varlen ? "(total_tokens, heads, headdim)" : "(batch, seqlen, heads, headdim)");
  check_extent(t, name);
  check_unit_last_stride(t, name);
  check_device(t, name, dev);
}

// cu_seqlens lives on the host here; CUDA tensors are copied by the CUDA backend first.
void check_cu_seqlens_values(const std::int32_t* cu, int batch, std::int64_t total,
                             std::int64_t max_len, const char* name, const char* tensor,
                             const char* max_name) {
  if (batch >= 0 && cu[0] < 0)
    fail(ErrorCode::invalid_argument, std::string(name) + "[0] must be >= 0, got " +
                                          std::to_string(cu[0]));
  for (int b = 0; b < batch; ++b) {
    const std::int64_t len = std::int64_t(cu[b + 1]) - cu[b];
    if (len < 0)
      fail(ErrorCode::invalid_argument, std::string(name) + " must be non-decreasing: [" +
                                            std::to_string(b) + "]=" + std::to_string(cu[b]) +
                                            " > [" + std::to_string(b + 1) +
                                            "]=" + std::to_string(cu[b + 1]));
    if (len > max_len)
      fail(ErrorCode::invalid_argument, std::string(name) + ": sequence " + std::to_string(b) +
                                            " has length " + std::to_string(len) + " > " +
                                            max_name + "=" + std::to_string(max_len));
  }
  if (cu[batch] > total)
    fail(ErrorCode::shape_mismatch, std::string(name) + "[" + std::to_string(batch) + "]=" +
                                        std::to_string(cu[batch]) + " is past the " + tensor +
                                        " tensor's " + std::to_string(total) + " rows");
}

struct Validated {
  ForwardParams p;
  Device device;
  bool varlen = false;
  std::int64_t bias_shape[4] = {0, 0, 0, 0};
};

Validated validate_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& out, const TensorView& lse, const Options& o) {
  Validated r;
  ForwardParams& p = r.p;
  const Device dev = q.device;
  r.device = dev;
  const bool varlen = o.cu_seqlens_q.has_value() || o.cu_seqlens_k.has_value();
  r.varlen = varlen;
  if (varlen && !(o.cu_seqlens_q && o.cu_seqlens_k))
    fail(ErrorCode::invalid_argument,
         o.cu_seqlens_q ? "cu_seqlens_k: required when cu_seqlens_q is given"
                        : "cu_seqlens_q: required when cu_seqlens_k is given");

  check_operand(q, "q", varlen, dev);
  check_operand(k, "k", varlen, dev);
  check_operand(v, "v", varlen, dev);
  check_operand(out, "out", varlen, dev);
  if (q.dtype != DType::f32 && q.dtype != DType::f16 && q.dtype != DType::bf16)
    fail(ErrorCode::dtype_mismatch, std::string("q: dtype must be float32, float16 or bfloat16, got ") +
                                        dtype_name(q.dtype));
  check_float_dtype(k, "k", q.dtype, "q's dtype");
  check_float_dtype(v, "v", q.dtype, "q's dtype");
  check_float_dtype(out, "out", q.dtype, "q's dtype");

  const int hd = varlen ? 2 : 3;   // head-dim axis
  const int hx = hd - 1;           // heads axis
  const std::int64_t head_dim = q.shape[hd];
  if (head_dim < 1 || head_dim > 256)
    fail(ErrorCode::invalid_argument,
         "q: head dim must be between 1 and 256, got " + std::to_string(head_dim));
  if (k.shape[hd] != head_dim)
    fail(ErrorCode::shape_mismatch, "k: head dim " + std::to_string(k.shape[hd]) +
                                        " must equal q's " + std::to_string(head_dim));
  check_same_shape(v, "v", k, "k");
  check_same_shape(out, "out", q, "q");
  const std::int64_t hq = q.shape[hx], hk = k.shape[hx];
  if (hq < 1 || hk < 1)
    fail(ErrorCode::shape_mismatch, "q: heads must be >= 1 (q has " + std::to_string(hq) +
                                        ", k has " + std::to_string(hk) + ")");
  if (hq % hk != 0)
    fail(ErrorCode::shape_mismatch, "k: its " + std::to_string(hk) +
                                        " heads must divide q's " + std::to_string(hq) +
                                        " heads (GQA/MQA)");
  if (hq > (1 << 30)) fail(ErrorCode::overflow, "q: too many heads");

  p.dtype = q.dtype;
  p.heads_q = int(hq);
  p.heads_kv = int(hk);
  p.head_dim = int(head_dim);
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_strides = operand_strides(q, varlen);
  p.k_strides = operand_strides(k, varlen);
  p.v_strides = operand_strides(v, varlen);
  p.out_strides = operand_strides(out, varlen);

  // lse
  check_extent(lse, "lse");
  check_device(lse, "lse", dev);
  if (lse.dtype != DType::f32)
    fail(ErrorCode::dtype_mismatch, std::string("lse: dtype must be float32, got ") + dtype_name(lse.dtype));

  if (varlen) {
    const TensorView& cq = *o.cu_seqlens_q;
    const TensorView& ck = *o.cu_seqlens_k;
    for (auto [t, name] : {std::pair{&cq, "cu_seqlens_q"}, std::pair{&ck, "cu_seqlens_k"}}) {
      check_rank(*t, name, 1, "(batch + 1)");
      check_extent(*t, name);
      check_device(*t, name, dev);
      if (t->dtype != DType::i32)
        fail(ErrorCode::dtype_mismatch, std::string(name) + ": dtype must be int32, got " +
                                            dtype_name(t->dtype));
      if (t->shape[0] < 1) fail(ErrorCode::shape_mismatch, std::string(name) + ": needs at least one entry");
      if (t->shape[0] > 1 && t->strides[0] != 1)
        fail(ErrorCode::bad_stride, std::string(name) + ": must be contiguous");
    }
    if (cq.shape[0] != ck.shape[0])
      fail(ErrorCode::shape_mismatch, "cu_seqlens_k: length " + std::to_string(ck.shape[0]) +
                                          " must equal cu_seqlens_q's " + std::to_string(cq.shape[0]));
    if (o.max_seqlen_q < 0 || o.max_seqlen_k < 0)
      fail(ErrorCode::invalid_argument, "max_seqlen_q/max_seqlen_k: must be >= 0");
    if (o.max_seqlen_q > (std::int64_t(1) << 31) || o.max_seqlen_k > (std::int64_t(1) << 31))
      fail(ErrorCode::invalid_argument, "max_seqlen_q/max_seqlen_k: must fit in 32 bits");
    p.batch = int(cq.shape[0] - 1);
    p.seqlen_q = o.max_seqlen_q;
    p.seqlen_k = o.max_seqlen_k;
    p.total_q = q.shape[0];
    p.total_k = k.shape[0];
    p.cu_seqlens_q = static_cast<const std::int32_t*>(cq.data);
    p.cu_seqlens_k = static_cast<const std::int32_t*>(ck.data);
    if (dev.kind == DeviceKind::cpu) {
      check_cu_seqlens_values(p.cu_seqlens_q, p.batch, p.total_q, p.seqlen_q, "cu_seqlens_q", "q",
                              "max_seqlen_q");
      check_cu_seqlens_values(p.cu_seqlens_k, p.batch, p.total_k, p.seqlen_k, "cu_seqlens_k", "k",
                              "max_seqlen_k");
    }
    check_rank(lse, "lse", 2, "(heads, total_q)");
    if (lse.shape[0] != hq || lse.shape[1] != p.total_q)
      fail(ErrorCode::shape_mismatch, "lse: shape " + shape_str(lse) + " must be (heads=" +
                                          std::to_string(hq) + ", total_q=" + std::to_string(p.total_q) + ")");
    p.lse_head = lse.strides[0];
    p.lse_row = lse.strides[1];
  } else {
    if (q.shape[0] != k.shape[0])
      fail(ErrorCode::shape_mismatch, "k: batch " + std::to_string(k.shape[0]) +
                                          " must equal q's " + std::to_string(q.shape[0]));
    if (q.shape[0] > (1 << 30)) fail(ErrorCode::overflow, "q: batch too large");
    if (q.shape[1] > (std::int64_t(1) << 31) || k.shape[1] > (std::int64_t(1) << 31))
      fail(ErrorCode::invalid_argument, "q/k: sequence lengths must fit in 32 bits");
    p.batch = int(q.shape[0]);
    p.seqlen_q = q.shape[1];
    p.seqlen_k = k.shape[1];
    p.total_q = p.batch * p.seqlen_q;
    p.total_k = p.batch * p.seqlen_k;
    check_rank(lse, "lse", 3, "(batch, heads, seqlen_q)");
    if (lse.shape[0] != p.batch || lse.shape[1] != hq || lse.shape[2] != p.seqlen_q)
      fail(ErrorCode::shape_mismatch, "lse: shape " + shape_str(lse) + " must be (batch, heads, seqlen_q) = (" +
                                          std::to_string(p.batch) + ", " + std::to_string(hq) + ", " +
                                          std::to_string(p.seqlen_q) + ")");
    p.lse_batch = lse.strides[0];
    p.lse_head = lse.strides[1];
    p.lse_row = lse.strides[2];
  }
  p.lse = static_cast<float*>(lse.data);

  // Scalars.
  const float scale = o.softmax_scale.value_or(1.0f / std::sqrt(float(head_dim)));
  if (!std::isfinite(scale))
    fail(ErrorCode::invalid_argument, "softmax_scale: must be finite, got " + std::to_string(scale));
  p.scale = scale;
  if (!(o.softcap >= 0.0f) || !std::isfinite(o.softcap))
    fail(ErrorCode::invalid_argument, "softcap: must be finite and >= 0 (0 disables it), got " +
                                          std::to_string(o.softcap));
  p.softcap = o.softcap;
  if (o.window_left < -1)
    fail(ErrorCode::invalid_argument, "window_left: must be >= -1 (-1 means unbounded), got " +
                                          std::to_string(o.window_left));
  if (o.window_right < -1)
    fail(ErrorCode::invalid_argument, "window_right: must be >= -1 (-1 means unbounded), got " +
                                          std::to_string(o.window_right));
  p.window_left = o.window_left;
  p.window_right = o.causal ? 0 : o.window_right;
  p.align_top_left = o.alignment == Alignment::top_left;

  // Bias: (batch or 1, heads or 1, seqlen_q, seqlen_k); broadcast dims get stride 0.
  if (o.bias) {
    const TensorView& b = *o.bias;
    check_rank(b, "bias", 4, "(batch or 1, heads or 1, seqlen_q, seqlen_k)");
    check_extent(b, "bias");
    check_device(b, "bias", dev);
    if (b.dtype != q.dtype && b.dtype != DType::f32)
      fail(ErrorCode::dtype_mismatch, std::string("bias: dtype must be q's (") + dtype_name(q.dtype) +
                                          ") or float32, got " + dtype_name(b.dtype));
    const bool ok = (b.shape[0] == p.batch || b.shape[0] == 1) &&
                    (b.shape[1] == hq || b.shape[1] == 1) && b.shape[2] == p.seqlen_q &&
                    b.shape[3] == p.seqlen_k;
    if (!ok)
      fail(ErrorCode::shape_mismatch,
           "bias: shape " + shape_str(b) + " must broadcast as (" + std::to_string(p.batch) + " or 1, " +
               std::to_string(hq) + " or 1, " + std::to_string(p.seqlen_q) + ", " +
               std::to_string(p.seqlen_k) + ")" + (varlen ? " (max_seqlen_q, max_seqlen_k in varlen mode)" : ""));
    check_unit_last_stride(b, "bias");
    p.bias = b.data;
    p.bias_dtype = b.dtype;
    p.bias_batch = b.shape[0] == 1 ? 0 : b.strides[0];
    p.bias_head = b.shape[1] == 1 ? 0 : b.strides[1];
    p.bias_row = b.strides[2];
    for (int i = 0; i < 4; ++i) r.bias_shape[i] = b.shape[i];
  }
  if (o.alibi_slopes) {
    const TensorView& a = *o.alibi_slopes;
    check_extent(a, "alibi_slopes");
    check_device(a, "alibi_slopes", dev);
    if (a.dtype != DType::f32)
      fail(ErrorCode::dtype_mismatch, std::string("alibi_slopes: dtype must be float32, got ") + dtype_name(a.dtype));
    const bool per_head = a.rank == 1 && a.shape[0] == hq;
    const bool per_batch_head = a.rank == 2 && a.shape[0] == p.batch && a.shape[1] == hq;
    if (!per_head && !per_batch_head)
      fail(ErrorCode::shape_mismatch, "alibi_slopes: shape " + shape_str(a) + " must be (heads=" +
                                          std::to_string(hq) + ") or (batch=" + std::to_string(p.batch) +
                                          ", heads=" + std::to_string(hq) + ")");
    check_unit_last_stride(a, "alibi_slopes");
    p.alibi = static_cast<const float*>(a.data);
    p.alibi_batch = per_batch_head ? a.strides[0] : 0;
  }
  if (o.num_threads < 0) fail(ErrorCode::invalid_argument, "num_threads: must be >= 0");
  p.num_threads = o.num_threads;
  p.stream = o.stream;
  return r;
}

bool backend_on_device(Backend b, const Device& d) {
  const bool cpu = b == Backend::cpu_reference || b == Backend::cpu_flash;
  return cpu == (d.kind == DeviceKind::cpu);
}

const char* unsupported_reason(Backend b, const Validated& v, bool backward) {
  if (!backend_on_device(b, v.device)) return "the backend does not run on the tensors' device";
  switch (b) {
    case Backend::cpu_reference:
    case Backend::cpu_flash: return nullptr;
    default:
#if FLASHATTN_WITH_CUDA
      return detail::cuda::unsupported_reason(b, v.p, backward);
#else
      (void)backward;
      return "this build has no CUDA backends (configure with FLASHATTN_CUDA=ON)";
#endif
  }
}

Backend choose_backend(const Validated& v, const Options& o, bool backward) {
  if (o.backend != Backend::automatic) {
    if (const char* why = unsupported_reason(o.backend, v, backward)) {
      const ErrorCode code = backend_on_device(o.backend, v.device) ? ErrorCode::unsupported
                                                                      : ErrorCode::device_mismatch;
      fail(code, std::string("backend: ") + backend_name(o.backend) + " cannot run this call: " + why);
    }
    return o.backend;
  }
  if (v.device.kind == DeviceKind::cpu) return Backend::cpu_flash;
  for (Backend b : {Backend::cuda_sm90, Backend::cuda_sm80, Backend::cuda_portable})
    if (unsupported_reason(b, v, backward) == nullptr) return b;
  fail(ErrorCode::device_mismatch, "q: tensors are on a CUDA device but no CUDA backend can run this call"
#if !FLASHATTN_WITH_CUDA
                                   " (this build has no CUDA support)"
#endif
  );
}

bool any_work(const ForwardParams& p) { return p.batch > 0 && p.total_q > 0; }

}  // namespace

Result forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
               const TensorView& lse, const Options& options) {
  Validated val = validate_forward(q, k, v, out, lse, options);
  const Backend b = choose_backend(val, options, false);
#if FLASHATTN_WITH_CUDA
  if (val.device.kind == DeviceKind::cuda) detail::cuda::check_pointers(val.p, val.device.index, false);
#endif
  if (!any_work(val.p)) return {b};
  switch (b) {
    case Backend::cpu_reference: detail::cpu::reference_forward(val.p); break;
    case Backend::cpu_flash: detail::cpu::flash_forward(val.p); break;
    default:
#if FLASHATTN_WITH_CUDA
      detail::cuda::forward(b, val.p, val.device.index);
#endif
      break;
  }
  return {b};
}

Result backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
                const TensorView& dout, const TensorView& lse, const TensorView& dq,
                const TensorView& dk, const TensorView& dv, const Options& options,
                const std::optional<TensorView>& dbias) {
  Validated val = validate_forward(q, k, v, out, lse, options);
  BackwardParams p;
  static_cast<ForwardParams&>(p) = val.p;
  const bool varlen = val.varlen;
  check_operand(dout, "dout", varlen, val.device);
  check_operand(dq, "dq", varlen, val.device);
  check_operand(dk, "dk", varlen, val.device);
  check_operand(dv, "dv", varlen, val.device);
  check_float_dtype(dout, "dout", q.dtype, "q's dtype");
  check_float_dtype(dq, "dq", q.dtype, "q's dtype");
  check_float_dtype(dk, "dk", q.dtype, "q's dtype");
  check_float_dtype(dv, "dv", q.dtype, "q's dtype");
  check_same_shape(dout, "dout", q, "q");
  check_same_shape(dq, "dq", q, "q");
  check_same_shape(dk, "dk", k, "k");
  check_same_shape(dv, "dv", v, "v");
  p.dout = dout.data;
  p.dq = dq.data;
  p.dk = dk.data;
  p.dv = dv.data;
  p.dout_strides = operand_strides(dout, varlen);
  p.dq_strides = operand_strides(dq, varlen);
  p.dk_strides = operand_strides(dk, varlen);
  p.dv_strides = operand_strides(dv, varlen);
  if (dbias) {
    if (!options.bias) fail(ErrorCode::invalid_argument, "dbias: given, but options.bias is not set");
    const TensorView& d = *dbias;
    check_rank(d, "dbias", 4, "like bias");
    check_extent(d, "dbias");
    check_device(d, "dbias", val.device);
    check_same_shape(d, "dbias", *options.bias, "bias");
    check_float_dtype(d, "dbias", options.bias->dtype, "bias's dtype");
    check_unit_last_stride(d, "dbias");
    p.dbias = d.data;
    p.dbias_batch_size = int(d.shape[0]);
    p.dbias_heads_size = int(d.shape[1]);
    p.dbias_batch = d.shape[0] == 1 ? 0 : d.strides[0];
    p.dbias_head = d.shape[1] == 1 ? 0 : d.strides[1];
    p.dbias_row = d.strides[2];
  }
  p.deterministic = options.deterministic;
  const Backend b = choose_backend(val, options, true);
#if FLASHATTN_WITH_CUDA
  if (val.device.kind == DeviceKind::cuda) detail::cuda::check_pointers(p, val.device.index, true);
#endif
  if (p.batch == 0) return {b};
  switch (b) {
    case Backend::cpu_reference: detail::cpu::reference_backward(p); break;
    case Backend::cpu_flash: detail::cpu::flash_backward(p); break;
    default:
#if FLASHATTN_WITH_CUDA
      detail::cuda::backward(b, p, val.device.index);
#endif
      break;
  }
  return {b};
}

Support supports(Backend backend, const TensorView& q, const TensorView& k, const TensorView& v,
                 const Options& options) {
  // Validate with scratch outputs shaped like the call would need.
  const bool varlen = options.cu_seqlens_q.has_value();
  TensorView out = q;
  TensorView lse;
  lse.dtype = DType::f32;
  lse.device = q.device;
  lse.data = q.data;
  const int hx = varlen ? 1 : 2;
  if (varlen) {
    lse.rank = 2;
    lse.shape = {q.shape[1], q.shape[0], 0, 0};
  } else {
    lse.rank = 3;
    lse.shape = {q.shape[0], q.shape[hx], q.shape[1], 0};
  }
  try {
    Validated val = validate_forward(q, k, v, out, lse, options);
    if (backend == Backend::automatic) return {true, nullptr};
    const char* why = unsupported_reason(backend, val, false);
    return {why == nullptr, why};
  } catch (const Error& e) {
    static thread_local std::string message;
    message = e.what();
    return {false, message.c_str()};
  }
}

bool backend_available(Backend b) {
  switch (b) {
    case Backend::automatic:
    case Backend::cpu_reference:
    case Backend::cpu_flash: return true;
    default:
#if FLASHATTN_WITH_CUDA
      return detail::cuda::available(b);
#else
      return false;
#endif
  }
}

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::automatic: return "automatic";
    case Backend::cpu_reference: return "cpu_reference";
    case Backend::cpu_flash: return "cpu_flash";
    case Backend::cuda_portable: return "cuda_portable";
    case Backend::cuda_sm80: return "cuda_sm80";
    case Backend::cuda_sm90: return "cuda_sm90";
  }
  return "?";
}

const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::shape_mismatch: return "shape_mismatch";
    case ErrorCode::dtype_mismatch: return "dtype_mismatch";
    case ErrorCode::null_pointer: return "null_pointer";
    case ErrorCode::bad_stride: return "bad_stride";
    case ErrorCode::device_mismatch: return "device_mismatch";
    case ErrorCode::overflow: return "overflow";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::cuda_error: return "cuda_error";
  }
  return "?";
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i32: return "int32";
  }
  return "?";
}

namespace {
TensorView make_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape, Device device) {
  if (shape.size() > std::size_t(kMaxRank))
    fail(ErrorCode::shape_mismatch, "view: rank must be at most " + std::to_string(kMaxRank));
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.rank = int(shape.size());
  int i = 0;
  for (auto s : shape) t.shape[i++] = s;
  return t;
}
}  // namespace

TensorView contiguous_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                           Device device) {
  TensorView t = make_view(data, dtype, shape, device);
  std::int64_t stride = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.strides[i] = stride;
    stride *= t.shape[i];
  }
  return t;
}

TensorView strided_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                        std::initializer_list<std::int64_t> strides, Device device) {
  TensorView t = make_view(data, dtype, shape, device);
  if (strides.size() != shape.size())
    fail(ErrorCode::shape_mismatch, "view: strides and shape differ in length");
  int i = 0;
  for (auto s : strides) t.strides[i++] = s;
  return t;
}

}  // namespace flashattn
