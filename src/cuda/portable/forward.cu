// The portable SIMT forward: launch, head-dim buckets and what it supports.
#include <climits>
#include <type_traits>

#include "cuda/families.hpp"
#include "cuda/portable/forward_f32.cuh"
#include "cuda/portable/forward_kernel.cuh"
#include "cuda/portable/launch_util.cuh"

namespace flashattn::detail::cuda {

namespace {

template <int kD>
std::size_t portable_smem() { return portable::smem_bytes<kD>(); }

std::size_t portable_smem_for(int head_dim) {
  if (head_dim <= 32) return portable_smem<32>();
  if (head_dim <= 64) return portable_smem<64>();
  if (head_dim <= 128) return portable_smem<128>();
  return portable_smem<256>();
}

template <typename T, int kD>
void launch(const ForwardParams& p) {
  constexpr int kBM = portable::Config<kD>::kBM;
  const std::size_t smem = portable::smem_bytes<kD>();
  auto kernel = portable::forward_kernel<T, kD>;
  allow_dynamic_smem(kernel, smem);
  const std::int64_t tiles = (p.seqlen_q + kBM - 1) / kBM;
  const std::int64_t total = tiles * p.heads_q * std::int64_t(p.batch);
  if (total == 0) return;
  // One block per tile when that fits in a grid; otherwise blocks loop.
  const unsigned grid = unsigned(total < INT_MAX ? total : INT_MAX);
  kernel<<<grid, portable::kThreads, smem, stream_of(p)>>>(p, tiles, total);
  FA_CUDA_CHECK_LAUNCH();
}

// fp32 with head dims 33..256: the register-tiled kernel where its shared
// memory fits the device (head dims <= 128: not sm_75's 64 KB; above 128:
// 214 KB, sm_90); anything else the element-wise one.
template <int kD>
void launch_f32_tiled(const ForwardParams& p) {
  using Tl = portable::F32Tile<kD>;
  auto kernel = portable::forward_f32_kernel<kD>;
  allow_dynamic_smem(kernel, Tl::kSmemBytes);
  const std::int64_t tiles = (p.seqlen_q + Tl::kBM - 1) / Tl::kBM;
  const std::int64_t total = tiles * p.heads_q * std::int64_t(p.batch);
  if (total == 0) return;
  const unsigned grid = unsigned(total < INT_MAX ? total : INT_MAX);
  kernel<<<grid, Tl::kThreads, Tl::kSmemBytes, stream_of(p)>>>(p, tiles, total);
  FA_CUDA_CHECK_LAUNCH();
}

bool f32_tiled(const ForwardParams& p) {
  if (p.head_dim <= 32 || p.head_dim > 256) return false;
  const std::size_t need = p.head_dim <= 64    ? portable::F32Tile<64>::kSmemBytes
                           : p.head_dim <= 128 ? portable::F32Tile<128>::kSmemBytes
                                               : portable::F32Tile<256>::kSmemBytes;
  return need <= current_device_info().smem_optin;
}

template <typename T>
void launch_dtype(const ForwardParams& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (f32_tiled(p)) {
      if (p.head_dim <= 64) return launch_f32_tiled<64>(p);
      if (p.head_dim <= 128) return launch_f32_tiled<128>(p);
      return launch_f32_tiled<256>(p);
    }
  }
  if (p.head_dim <= 32) return launch<T, 32>(p);
  if (p.head_dim <= 64) return launch<T, 64>(p);
  if (p.head_dim <= 128) return launch<T, 128>(p);
  return launch<T, 256>(p);
}

}  // namespace

const char* portable_unsupported(const ForwardParams& p, bool backward) {
  if (backward) return portable_backward_unsupported(p);
  if (portable_smem_for(p.head_dim) > current_device_info().smem_optin)
    return "the portable kernel's shared memory exceeds this device's per-block limit";
  return nullptr;
}

void portable_forward(const ForwardParams& p) {
  switch (p.dtype) {
    case DType::f16: return launch_dtype<__half>(p);
    case DType::bf16: return launch_dtype<__nv_bfloat16>(p);
    default: return launch_dtype<float>(p);
  }
}

}  // namespace flashattn::detail::cuda
