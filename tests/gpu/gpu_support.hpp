// GPU test helpers: device copies of fa_test::HostTensor (same strides, so
// poisoned outputs travel as they are), a forward through the public API with
// a chosen backend, and the skip for machines without a GPU.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "support.hpp"

namespace fa_gpu {

// Number of CUDA devices (0 on a machine without one; clears the error).
int device_count();
// Compute capability major*10+minor of device 0, or 0.
int device_arch();

#define FA_SKIP_WITHOUT_GPU(min_arch)                                                     \
  do {                                                                                    \
    if (::fa_gpu::device_count() == 0) GTEST_SKIP() << "no CUDA device";                  \
    if (::fa_gpu::device_arch() < (min_arch)) GTEST_SKIP() << "needs sm_" << (min_arch); \
  } while (0)

// Device allocations freed at scope end.
class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena();
  // A device copy of t's storage (gaps included) and its view there. `offset_bytes`
  // shifts the copy inside the allocation (misaligned-pointer tests).
  flashattn::TensorView upload(const fa_test::HostTensor& t, std::size_t offset_bytes = 0);
  void* alloc(std::size_t bytes);

 private:
  std::vector<void*> ptrs_;
};

// Copies a device view back into t (same storage size).
void download(fa_test::HostTensor& t, const flashattn::TensorView& dev);

struct GpuRun {
  fa_test::Outputs out;  // host copies of out and lse
  flashattn::Backend ran = flashattn::Backend::automatic;
};

// Forward of problem p on device 0 with `backend` (outputs poisoned with NaN
// before the launch), on `stream`; synchronizes before copying back.
GpuRun run_forward(const fa_test::Problem& p, flashattn::Backend backend, cudaStream_t stream = nullptr);

// run_forward, the fp64 reference (and naive same-precision for fp16/bf16), and
// the tolerance rule on out and lse; failures are reported through gtest.
void expect_forward_matches(const fa_test::Case& c, flashattn::Backend backend);

// A (batch 2, 2 heads) case of dtype dt, head dim d, Sq x Sk: the base of the
// sm90 suites' case lists.
fa_test::Case small_case(fa_test::DType dt, int d, std::int64_t sq, std::int64_t sk);

// Cases the sm90 forward and backward suites share: the (batch, heads, seqlen,
// dim) memory order, and varlen batches with empty sequences and NaN padding
// rows, plain, causal and windowed (GQA).
void append_layout_and_varlen_cases(std::vector<fa_test::Case>& v);

}  // namespace fa_gpu
