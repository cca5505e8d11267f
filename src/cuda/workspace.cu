// See workspace.hpp for the contract.
#include "cuda/common.cuh"
#include "cuda/workspace.hpp"

#include <map>
#include <mutex>
#include <utility>

namespace flashattn::detail::cuda {

namespace {
struct Block {
  void* ptr = nullptr;
  std::size_t bytes = 0;
};
}  // namespace

void* workspace(std::size_t bytes, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, Block> pool;  // never freed: lives for the process
  if (bytes == 0) bytes = 256;
  int device = 0;
  FA_CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  Block& blk = pool[{device, stream}];
  if (blk.bytes >= bytes) return blk.ptr;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  FA_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  if (status != cudaStreamCaptureStatusNone)
    throw Error(ErrorCode::unsupported,
                "workspace: the backward needs " + std::to_string(bytes) +
                    " bytes of scratch, more than this stream has cached; run the call once before graph capture");
  // Grow geometrically so that a slowly growing workload reallocates rarely.
  std::size_t want = bytes;
  if (want < blk.bytes + blk.bytes / 2) want = blk.bytes + blk.bytes / 2;
  want = (want + 255) & ~std::size_t(255);
  if (blk.ptr != nullptr) FA_CUDA_CHECK(cudaFreeAsync(blk.ptr, stream));
  blk = {};
  void* ptr = nullptr;
  FA_CUDA_CHECK(cudaMallocAsync(&ptr, want, stream));
  blk = {ptr, want};
  return ptr;
}

}  // namespace flashattn::detail::cuda
