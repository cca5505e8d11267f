// The CUDA side of dispatch: which family can run a call, pointer checks before
// launch, and the device guard around each launch.
#include <cuda_runtime.h>

#include <mutex>
#include <string>
#include <vector>

#include "backends.hpp"
#include "cuda/common.cuh"
#include "cuda/families.hpp"

namespace flashattn::detail::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
  throw Error(ErrorCode::cuda_error, std::string("CUDA error ") + cudaGetErrorName(err) + ": " +
                                         cudaGetErrorString(err) + " (" + what + " at " + file + ":" +
                                         std::to_string(line) + ")");
}

int current_device_arch() {
  static std::mutex mu;
  static std::vector<int> cache;
  int dev = 0;
  FA_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (int(cache.size()) <= dev) cache.resize(dev + 1, -1);
  if (cache[dev] < 0) {
    int major = 0, minor = 0;
    FA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    FA_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    cache[dev] = major * 10 + minor;
  }
  return cache[dev];
}

namespace {

// Makes `device` current for the scope of a call and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) FA_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() {
    int now = 0;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) (void)cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void check_pointer(const void* ptr, const char* name, int device) {
  if (ptr == nullptr) return;
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(ErrorCode::device_mismatch, std::string(name) + ": not a pointer the CUDA runtime knows (" +
                                                cudaGetErrorString(err) + ")");
  }
  const bool on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
  if (!on_device)
    throw Error(ErrorCode::device_mismatch,
                std::string(name) + ": points to host memory, but the tensor is declared on cuda:" +
                    std::to_string(device));
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw Error(ErrorCode::device_mismatch, std::string(name) + ": lives on cuda:" + std::to_string(attr.device) +
                                                " but the tensor is declared on cuda:" + std::to_string(device));
}

void check_cu_seqlens(const ForwardParams& p) {
  // The values are on the device; reading them costs a synchronization, which is
  // skipped while the stream is being captured into a graph.
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FA_CUDA_CHECK(cudaStreamIsCapturing(stream_of(p), &status));
  if (status != cudaStreamCaptureStatusNone) return;
  std::vector<std::int32_t> q(std::size_t(p.batch) + 1), k(q.size());
  FA_CUDA_CHECK(cudaMemcpyAsync(q.data(), p.cu_seqlens_q, q.size() * 4, cudaMemcpyDeviceToHost, stream_of(p)));
  FA_CUDA_CHECK(cudaMemcpyAsync(k.data(), p.cu_seqlens_k, k.size() * 4, cudaMemcpyDeviceToHost, stream_of(p)));
  FA_CUDA_CHECK(cudaStreamSynchronize(stream_of(p)));
  for (auto [cu, total, max_len, name] :
       {std::tuple{&q, p.total_q, p.seqlen_q, "cu_seqlens_q"}, std::tuple{&k, p.total_k, p.seqlen_k, "cu_seqlens_k"}}) {
    const auto& c = *cu;
    if (c[0] < 0) throw Error(ErrorCode::invalid_argument, std::string(name) + "[0] must be >= 0");
    for (int b = 0; b < p.batch; ++b) {
      const std::int64_t len = std::int64_t(c[b + 1]) - c[b];
      if (len < 0)
        throw Error(ErrorCode::invalid_argument, std::string(name) + " must be non-decreasing at index " +
                                                     std::to_string(b + 1));
      if (len > max_len)
        throw Error(ErrorCode::invalid_argument, std::string(name) + ": sequence " + std::to_string(b) +
                                                     " is longer than its max_seqlen (" + std::to_string(max_len) + ")");
    }
    if (c[p.batch] > total)
      throw Error(ErrorCode::shape_mismatch, std::string(name) + ": last offset " + std::to_string(c[p.batch]) +
                                                 " is past the tensor's " + std::to_string(total) + " rows");
  }
}

}  // namespace

bool available(Backend b) {
  if (!have_device()) return false;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  const int arch = current_device_arch();
  switch (b) {
    case Backend::cuda_portable: return arch >= 75;
    case Backend::cuda_sm80: return arch >= 80;
    case Backend::cuda_sm90: return arch == 90;
    default: return false;
  }
}

const char* unsupported_reason(Backend b, const ForwardParams& p, bool backward) {
  if (!have_device()) return "no CUDA device is present";
  if (!available(b)) return "the current GPU's architecture is too old for this backend";
  switch (b) {
    case Backend::cuda_portable: return portable_unsupported(p, backward);
    case Backend::cuda_sm80: return sm80_unsupported(p, backward);
    case Backend::cuda_sm90: return sm90_unsupported(p, backward);
    default: return "not a CUDA backend";
  }
}

void check_pointers(const ForwardParams& p, int device, bool backward) {
  if (!have_device()) throw Error(ErrorCode::device_mismatch, "q: tensors are on CUDA but no CUDA device is present");
  DeviceGuard guard(device);
  check_pointer(p.q, "q", device);
  check_pointer(p.k, "k", device);
  check_pointer(p.v, "v", device);
  check_pointer(p.out, "out", device);
  check_pointer(p.lse, "lse", device);
  check_pointer(p.bias, "bias", device);
  check_pointer(p.alibi, "alibi_slopes", device);
  check_pointer(p.cu_seqlens_q, "cu_seqlens_q", device);
  check_pointer(p.cu_seqlens_k, "cu_seqlens_k", device);
  if (backward) {
    const auto& bp = static_cast<const BackwardParams&>(p);
    check_pointer(bp.dout, "dout", device);
    check_pointer(bp.dq, "dq", device);
    check_pointer(bp.dk, "dk", device);
    check_pointer(bp.dv, "dv", device);
    check_pointer(bp.dbias, "dbias", device);
  }
  if (p.cu_seqlens_q != nullptr && p.batch > 0) check_cu_seqlens(p);
}

void forward(Backend b, const ForwardParams& p, int device) {
  DeviceGuard guard(device);
  switch (b) {
    case Backend::cuda_portable: portable_forward(p); break;
    case Backend::cuda_sm80: sm80_forward(p); break;
    case Backend::cuda_sm90: sm90_forward(p); break;
    default: break;
  }
}

void backward(Backend b, const BackwardParams& p, int device) {
  DeviceGuard guard(device);
  switch (b) {
    case Backend::cuda_portable: portable_backward(p); break;
    case Backend::cuda_sm80: sm80_backward(p); break;
    case Backend::cuda_sm90: sm90_backward(p); break;
    default: break;
  }
}

}  // namespace flashattn::detail::cuda
