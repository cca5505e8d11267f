// Host-side launch helpers shared by the forward kernels: device properties
// cached per device, and the one-time raise of a kernel's shared-memory limit.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "cuda/common.cuh"

namespace flashattn::detail::cuda {

struct DeviceInfo {
  int sm_count = 0;
  std::size_t smem_optin = 0;  // largest dynamic shared memory a block may ask for
};

inline DeviceInfo current_device_info() {
  static std::mutex mu;
  static std::vector<DeviceInfo> cache;
  int dev = 0;
  FA_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (int(cache.size()) <= dev) cache.resize(dev + 1);
  DeviceInfo& d = cache[dev];
  if (d.sm_count == 0) {
    int sms = 0, optin = 0;
    FA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    FA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    d.smem_optin = std::size_t(optin);
    d.sm_count = sms;
  }
  return d;
}

// Kernels asking for more than 48 KB of dynamic shared memory must say so
// first (per device); doing it once keeps host calls off the hot path.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, std::size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::set<std::tuple<const void*, int, std::size_t>> done;  // (kernel, device, bytes)
  int dev = 0;
  FA_CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), dev, bytes);
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  done.insert(key);
}

}  // namespace flashattn::detail::cuda
