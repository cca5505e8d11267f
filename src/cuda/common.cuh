// Shared device-side helpers for every CUDA kernel family.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "flashattn/error.hpp"
#include "params.hpp"

namespace flashattn::detail::cuda {

// Throws flashattn::Error(cuda_error) with the runtime's message.
void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

#define FA_CUDA_CHECK(expr)                                                               \
  do {                                                                                    \
    const cudaError_t fa_err_ = (expr);                                                   \
    if (fa_err_ != cudaSuccess)                                                           \
      ::flashattn::detail::cuda::throw_cuda_error(fa_err_, #expr, __FILE__, __LINE__);   \
  } while (0)

// Checks the launch itself (not its completion: no synchronization on the hot path).
#define FA_CUDA_CHECK_LAUNCH() FA_CUDA_CHECK(cudaGetLastError())

inline cudaStream_t stream_of(const ForwardParams& p) { return static_cast<cudaStream_t>(p.stream); }

// Storage types per DType.
template <DType T> struct Storage;
template <> struct Storage<DType::f32> { using type = float; };
template <> struct Storage<DType::f16> { using type = __half; };
template <> struct Storage<DType::bf16> { using type = __nv_bfloat16; };

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Bias element as float, whatever its dtype.
__device__ __forceinline__ float load_bias(const ForwardParams& p, std::int64_t off) {
  switch (p.bias_dtype) {
    case DType::f16: return __half2float(static_cast<const __half*>(p.bias)[off]);
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p.bias)[off]);
    default: return static_cast<const float*>(p.bias)[off];
  }
}

}  // namespace flashattn::detail::cuda
