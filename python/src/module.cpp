// The native half of the Python package: DLPack tensors in, flashattn::forward /
// backward out. All validation stays in the C++ library; this file only turns
// nanobind ndarrays into TensorViews (strides in elements, used in place), maps
// options, and translates flashattn::Error into Python exceptions.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "flashattn/flashattn.hpp"

namespace nb = nanobind;
namespace fa = flashattn;

namespace {

// Inputs are read-only: accept read-only numpy arrays too. Outputs must be writable.
using In = nb::ndarray<nb::ro>;
using Out = nb::ndarray<>;

std::string dlpack_dtype_name(const nb::dlpack::dtype& t) {
  std::string base;
  switch (static_cast<nb::dlpack::dtype_code>(t.code)) {
    case nb::dlpack::dtype_code::Int: base = "int"; break;
    case nb::dlpack::dtype_code::UInt: base = "uint"; break;
    case nb::dlpack::dtype_code::Float: base = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: base = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: base = "complex"; break;
    case nb::dlpack::dtype_code::Bool: return "bool";
    default: base = "dtype_code" + std::to_string(int(t.code)) + "_"; break;
  }
  return base + std::to_string(int(t.bits));
}

fa::DType map_dtype(const nb::dlpack::dtype& t, const char* name) {
  using C = nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    const auto code = static_cast<C>(t.code);
    if (code == C::Float && t.bits == 32) return fa::DType::f32;
    if (code == C::Float && t.bits == 16) return fa::DType::f16;
    if (code == C::Bfloat && t.bits == 16) return fa::DType::bf16;
    if (code == C::Int && t.bits == 32) return fa::DType::i32;
  }
  throw fa::Error(fa::ErrorCode::dtype_mismatch,
                  std::string(name) + ": dtype " + dlpack_dtype_name(t) +
                      " is not supported (float32, float16 or bfloat16; int32 for cu_seqlens)");
}

// DLPack device types: 1 CPU, 2 CUDA, 3 CUDA pinned host memory (readable as CPU).
fa::Device map_device(int type, int id, const char* name) {
  switch (type) {
    case 1:
    case 3: return {fa::DeviceKind::cpu, 0};
    case 2: return {fa::DeviceKind::cuda, id};
    default:
      throw fa::Error(fa::ErrorCode::device_mismatch,
                      std::string(name) + ": DLPack device type " + std::to_string(type) +
                          " is not supported (CPU or CUDA tensors only)");
  }
}

template <typename A>
fa::TensorView view_of(const A& a, const char* name) {
  fa::TensorView t;
  if (a.ndim() > std::size_t(fa::kMaxRank))
    throw fa::Error(fa::ErrorCode::shape_mismatch,
                    std::string(name) + ": rank " + std::to_string(a.ndim()) + " is above the maximum " +
                        std::to_string(fa::kMaxRank));
  t.data = const_cast<void*>(static_cast<const void*>(a.data()));
  t.dtype = map_dtype(a.dtype(), name);
  t.device = map_device(a.device_type(), a.device_id(), name);
  t.rank = int(a.ndim());
  // DLPack allows null strides for compact row-major tensors.
  std::int64_t compact = 1;
  for (int i = t.rank - 1; i >= 0; --i) {
    t.shape[i] = std::int64_t(a.shape(std::size_t(i)));
    t.strides[i] = a.stride_ptr() != nullptr ? a.stride(std::size_t(i)) : compact;
    compact *= t.shape[i];
  }
  return t;
}

template <typename A>
std::optional<fa::TensorView> opt_view(const std::optional<A>& a, const char* name) {
  if (!a) return std::nullopt;
  return view_of(*a, name);
}

fa::Backend parse_backend(const std::string& s) {
  for (fa::Backend b : {fa::Backend::automatic, fa::Backend::cpu_reference, fa::Backend::cpu_flash,
                        fa::Backend::cuda_portable, fa::Backend::cuda_sm80, fa::Backend::cuda_sm90})
    if (s == fa::backend_name(b)) return b;
  if (s.empty() || s == "auto") return fa::Backend::automatic;
  throw fa::Error(fa::ErrorCode::invalid_argument,
                  "backend: unknown name '" + s +
                      "' (automatic, cpu_reference, cpu_flash, cuda_portable, cuda_sm80, cuda_sm90)");
}

fa::Alignment parse_alignment(const std::string& s) {
  if (s == "bottom_right") return fa::Alignment::bottom_right;
  if (s == "top_left") return fa::Alignment::top_left;
  throw fa::Error(fa::ErrorCode::invalid_argument,
                  "alignment: must be 'bottom_right' (flash_attn) or 'top_left' (SDPA is_causal), got '" + s + "'");
}

// Everything that is not a main operand, as keyword arguments shared by forward and backward.
struct PyOptions {
  std::optional<In> bias, alibi_slopes, cu_seqlens_q, cu_seqlens_k;
  std::int64_t max_seqlen_q = 0, max_seqlen_k = 0;
  std::optional<double> softmax_scale;
  bool causal = false;
  std::string alignment = "bottom_right";
  std::int64_t window_left = -1, window_right = -1;
  double softcap = 0.0;
  std::string backend = "automatic";
  bool deterministic = false;
  std::uintptr_t stream = 0;
  int num_threads = 0;
};

fa::Options to_options(const PyOptions& p) {
  fa::Options o;
  if (p.softmax_scale) o.softmax_scale = float(*p.softmax_scale);
  o.causal = p.causal;
  o.alignment = parse_alignment(p.alignment);
  // Window bounds travel as int; anything outside that range is invalid anyway.
  auto window = [](std::int64_t w, const char* name) {
    if (w < -1 || w > INT32_MAX)
      throw fa::Error(fa::ErrorCode::invalid_argument,
                      std::string(name) + ": must be >= -1 (-1 means unbounded), got " + std::to_string(w));
    return int(w);
  };
  o.window_left = window(p.window_left, "window_left");
  o.window_right = window(p.window_right, "window_right");
  o.softcap = float(p.softcap);
  o.bias = opt_view(p.bias, "bias");
  o.alibi_slopes = opt_view(p.alibi_slopes, "alibi_slopes");
  o.cu_seqlens_q = opt_view(p.cu_seqlens_q, "cu_seqlens_q");
  o.cu_seqlens_k = opt_view(p.cu_seqlens_k, "cu_seqlens_k");
  o.max_seqlen_q = p.max_seqlen_q;
  o.max_seqlen_k = p.max_seqlen_k;
  o.backend = parse_backend(p.backend);
  o.deterministic = p.deterministic;
  o.stream = reinterpret_cast<void*>(p.stream);
  o.num_threads = p.num_threads;
  return o;
}

PyOptions gather(std::optional<In> bias, std::optional<In> alibi_slopes, std::optional<In> cu_seqlens_q,
                 std::optional<In> cu_seqlens_k, std::int64_t max_seqlen_q, std::int64_t max_seqlen_k,
                 std::optional<double> softmax_scale, bool causal, std::string alignment,
                 std::int64_t window_left, std::int64_t window_right, double softcap, std::string backend,
                 bool deterministic, std::uintptr_t stream, int num_threads) {
  PyOptions p;
  p.bias = std::move(bias);
  p.alibi_slopes = std::move(alibi_slopes);
  p.cu_seqlens_q = std::move(cu_seqlens_q);
  p.cu_seqlens_k = std::move(cu_seqlens_k);
  p.max_seqlen_q = max_seqlen_q;
  p.max_seqlen_k = max_seqlen_k;
  p.softmax_scale = softmax_scale;
  p.causal = causal;
  p.alignment = std::move(alignment);
  p.window_left = window_left;
  p.window_right = window_right;
  p.softcap = softcap;
  p.backend = std::move(backend);
  p.deterministic = deterministic;
  p.stream = stream;
  p.num_threads = num_threads;
  return p;
}

std::string run_forward(const In& q, const In& k, const In& v, const Out& out, const Out& lse,
                        const PyOptions& po) {
  const fa::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
  const fa::TensorView ov = view_of(out, "out"), lv = view_of(lse, "lse");
  const fa::Options o = to_options(po);
  fa::Result r;
  {
    // The views keep the arrays alive (the ndarrays outlive this scope); CPU
    // threads and CUDA launches need no Python state.
    nb::gil_scoped_release release;
    r = fa::forward(qv, kv, vv, ov, lv, o);
  }
  return fa::backend_name(r.backend);
}

std::string run_backward(const In& q, const In& k, const In& v, const In& out, const In& dout,
                         const In& lse, const Out& dq, const Out& dk, const Out& dv,
                         const std::optional<Out>& dbias, const PyOptions& po) {
  const fa::TensorView qv = view_of(q, "q"), kv = view_of(k, "k"), vv = view_of(v, "v");
  const fa::TensorView ov = view_of(out, "out"), dov = view_of(dout, "dout"), lv = view_of(lse, "lse");
  const fa::TensorView dqv = view_of(dq, "dq"), dkv = view_of(dk, "dk"), dvv = view_of(dv, "dv");
  const std::optional<fa::TensorView> dbv = opt_view(dbias, "dbias");
  const fa::Options o = to_options(po);
  fa::Result r;
  {
    nb::gil_scoped_release release;
    r = fa::backward(qv, kv, vv, ov, dov, lv, dqv, dkv, dvv, o, dbv);
  }
  return fa::backend_name(r.backend);
}

}  // namespace

NB_MODULE(_flashattn, m) {
  m.doc() = "Native flashattn bindings (DLPack tensors in, filled outputs out). Use the flashattn package.";
  m.attr("__version__") = fa::kVersion;
  m.attr("with_cuda") = bool(FLASHATTN_PY_WITH_CUDA);

  // flashattn::Error -> the Python exception a user expects for the error code,
  // with the library's message unchanged.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const fa::Error& e) {
      switch (e.code()) {
        case fa::ErrorCode::dtype_mismatch:
        case fa::ErrorCode::device_mismatch: PyErr_SetString(PyExc_TypeError, e.what()); break;
        case fa::ErrorCode::unsupported: PyErr_SetString(PyExc_NotImplementedError, e.what()); break;
        case fa::ErrorCode::cuda_error: PyErr_SetString(PyExc_RuntimeError, e.what()); break;
        default: PyErr_SetString(PyExc_ValueError, e.what()); break;
      }
    }
  });

  m.def("backend_names", [] {
    std::vector<std::string> names;
    for (fa::Backend b : {fa::Backend::automatic, fa::Backend::cpu_reference, fa::Backend::cpu_flash,
                          fa::Backend::cuda_portable, fa::Backend::cuda_sm80, fa::Backend::cuda_sm90})
      names.emplace_back(fa::backend_name(b));
    return names;
  });
  m.def(
      "backend_available", [](const std::string& name) { return fa::backend_available(parse_backend(name)); },
      nb::arg("name"), "Whether the named backend is compiled in and usable on this machine now.");

  m.def(
      "forward",
      [](const In& q, const In& k, const In& v, const Out& out, const Out& lse, std::optional<In> bias,
         std::optional<In> alibi_slopes, std::optional<In> cu_seqlens_q, std::optional<In> cu_seqlens_k,
         std::int64_t max_seqlen_q, std::int64_t max_seqlen_k, std::optional<double> softmax_scale,
         bool causal, std::string alignment, std::int64_t window_left, std::int64_t window_right,
         double softcap, std::string backend, std::uintptr_t stream, int num_threads) {
        const PyOptions po = gather(std::move(bias), std::move(alibi_slopes), std::move(cu_seqlens_q),
                                    std::move(cu_seqlens_k), max_seqlen_q, max_seqlen_k, softmax_scale,
                                    causal, std::move(alignment), window_left, window_right, softcap,
                                    std::move(backend), false, stream, num_threads);
        return run_forward(q, k, v, out, lse, po);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"), nb::kw_only(),
      nb::arg("bias") = nb::none(), nb::arg("alibi_slopes") = nb::none(),
      nb::arg("cu_seqlens_q") = nb::none(), nb::arg("cu_seqlens_k") = nb::none(),
      nb::arg("max_seqlen_q") = 0, nb::arg("max_seqlen_k") = 0, nb::arg("softmax_scale") = nb::none(),
      nb::arg("causal") = false, nb::arg("alignment") = "bottom_right", nb::arg("window_left") = -1,
      nb::arg("window_right") = -1, nb::arg("softcap") = 0.0, nb::arg("backend") = "automatic",
      nb::arg("stream") = 0, nb::arg("num_threads") = 0,
      "Fills out and lse (caller-allocated) with attention of q, k, v. Returns the backend that ran.");

  m.def(
      "backward",
      [](const In& q, const In& k, const In& v, const In& out, const In& dout, const In& lse, const Out& dq,
         const Out& dk, const Out& dv, std::optional<Out> dbias, std::optional<In> bias,
         std::optional<In> alibi_slopes, std::optional<In> cu_seqlens_q, std::optional<In> cu_seqlens_k,
         std::int64_t max_seqlen_q, std::int64_t max_seqlen_k, std::optional<double> softmax_scale,
         bool causal, std::string alignment, std::int64_t window_left, std::int64_t window_right,
         double softcap, std::string backend, bool deterministic, std::uintptr_t stream, int num_threads) {
        const PyOptions po = gather(std::move(bias), std::move(alibi_slopes), std::move(cu_seqlens_q),
                                    std::move(cu_seqlens_k), max_seqlen_q, max_seqlen_k, softmax_scale,
                                    causal, std::move(alignment), window_left, window_right, softcap,
                                    std::move(backend), deterministic, stream, num_threads);
        return run_backward(q, k, v, out, dout, lse, dq, dk, dv, dbias, po);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("dout"), nb::arg("lse"),
      nb::arg("dq"), nb::arg("dk"), nb::arg("dv"), nb::kw_only(), nb::arg("dbias") = nb::none(),
      nb::arg("bias") = nb::none(), nb::arg("alibi_slopes") = nb::none(),
      nb::arg("cu_seqlens_q") = nb::none(), nb::arg("cu_seqlens_k") = nb::none(),
      nb::arg("max_seqlen_q") = 0, nb::arg("max_seqlen_k") = 0, nb::arg("softmax_scale") = nb::none(),
      nb::arg("causal") = false, nb::arg("alignment") = "bottom_right", nb::arg("window_left") = -1,
      nb::arg("window_right") = -1, nb::arg("softcap") = 0.0, nb::arg("backend") = "automatic",
      nb::arg("deterministic") = false, nb::arg("stream") = 0, nb::arg("num_threads") = 0,
      "Fills dq, dk, dv (and dbias when given) from the saved out and lse. Returns the backend that ran.");
}
