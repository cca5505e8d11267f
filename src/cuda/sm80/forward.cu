// The sm80 tensor-core forward: head-dim buckets, what it supports, launch.
#include <climits>
#include <cstdint>

#include "cuda/families.hpp"
#include "cuda/portable/launch_util.cuh"
#include "cuda/sm80/forward_kernel.cuh"

namespace flashattn::detail::cuda {

namespace {

// Supported head dims; others run padded up to the next one (zero-filled loads).
int bucket(int head_dim) {
  for (int d : {64, 96, 128, 192, 256})
    if (head_dim <= d) return d;
  return 0;
}

// Per head dim: the lean configuration (masks only) and the shaped one
// (softcap/bias/ALiBi code present; its larger register footprint needs a
// smaller key tile). Config<D, key tile, stages, Q in registers, shaped>.
template <int kD, bool kShaped> struct Default;
template <bool S> struct Default<64, S> { using type = sm80::Config<64, 64, 3, !S, S>; };
template <bool S> struct Default<96, S> { using type = sm80::Config<96, 32, 3, false, S>; };
template <bool S> struct Default<128, S> { using type = sm80::Config<128, S ? 32 : 64, S ? 3 : 2, false, S>; };
template <bool S> struct Default<192, S> { using type = sm80::Config<192, 64, 2, false, S>; };
// 64 rows x 4 warps, one K and one V buffer (96 KB): two blocks per SM.
template <bool S> struct Default<256, S> { using type = sm80::Config<256, S ? 32 : 64, 1, false, S, 4, 1>; };
// Head dim 128 without a mask: one K and one V buffer measured 0-6% faster
// than two K/V stages at S >= 1k, and 2-11% slower with a causal mask at
// S <= 4k (docs/perf/cuda_forward.md, v4), so the mask picks.
using Unmasked128 = sm80::Config<128, 64, 1, false, false>;

// Shared memory of the shaped instantiation, which also runs unshaped calls
// where the lean one does not fit (its smaller key tile needs less).
std::size_t smem_for(int d) {
  switch (d) {
    case 64: return Default<64, true>::type::kSmemBytes;
    case 96: return Default<96, true>::type::kSmemBytes;
    case 128: return Default<128, true>::type::kSmemBytes;
    case 192: return Default<192, true>::type::kSmemBytes;
    default: return Default<256, true>::type::kSmemBytes;
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0; }
bool stride_ok(const OperandStrides& s) { return s.batch % 8 == 0 && s.row % 8 == 0 && s.head % 8 == 0; }

template <typename T, typename Tr>
void launch_with(const ForwardParams& p) {
  const std::int64_t tiles = (p.seqlen_q + Tr::kBM - 1) / Tr::kBM;
  const std::int64_t total = tiles * p.heads_q * std::int64_t(p.batch);
  // kLeanBlock (32-bit work decoding, so total < 2^31) at head dim 256 without
  // shaping: +0.5-6% there; at 64 it measured 1-3% slower, at 128 within
  // +-2.5% (docs/perf/cuda_forward.md, v5), so the other kernels stay v4's.
  constexpr bool kLeanBlock = Tr::kD == 256 && !Tr::kShaped;
  auto kernel = kLeanBlock && total <= INT_MAX ? sm80::forward_kernel<T, Tr, kLeanBlock> : sm80::forward_kernel<T, Tr>;
  allow_dynamic_smem(kernel, Tr::kSmemBytes);
  if (total == 0) return;
  const unsigned grid = unsigned(total < INT_MAX ? total : INT_MAX);
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream_of(p)>>>(p, tiles, total);
  FA_CUDA_CHECK_LAUNCH();
}

template <typename T, int kD>
void launch(const ForwardParams& p) {
  const bool shaped = p.softcap > 0.0f || p.bias != nullptr || p.alibi != nullptr || !(p.scale > 0.0f);
  using Lean = typename Default<kD, false>::type;
  const std::size_t optin = current_device_info().smem_optin;
  if (shaped || Lean::kSmemBytes > optin) return launch_with<T, typename Default<kD, true>::type>(p);
  if constexpr (kD == 128) {
    if (p.window_left < 0 && p.window_right < 0 && Unmasked128::kSmemBytes <= optin)
      return launch_with<T, Unmasked128>(p);
  }
  launch_with<T, Lean>(p);
}

template <typename T>
void launch_dtype(const ForwardParams& p) {
  switch (bucket(p.head_dim)) {
    case 64: return launch<T, 64>(p);
    case 96: return launch<T, 96>(p);
    case 128: return launch<T, 128>(p);
    case 192: return launch<T, 192>(p);
    default: return launch<T, 256>(p);
  }
}

}  // namespace

const char* sm80_unsupported(const ForwardParams& p, bool backward) {
  if (backward) return sm80_backward_unsupported(p);
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) return "tensor cores here take float16/bfloat16 only";
  // cp.async moves 16-byte rows: every row must start 16-byte aligned.
  if (p.head_dim % 8 != 0) return "head dim must be a multiple of 8 (16-byte rows)";
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out))
    return "q, k, v and out must be 16-byte aligned";
  if (!stride_ok(p.q_strides) || !stride_ok(p.k_strides) || !stride_ok(p.v_strides) || !stride_ok(p.out_strides))
    return "batch/row/head strides of q, k, v and out must be multiples of 8 elements";
  if (p.seqlen_q > INT_MAX - 256 || p.seqlen_k > INT_MAX - 256)
    return "sequence lengths must stay below 2^31 - 256 (32-bit tile indices)";
  if (smem_for(bucket(p.head_dim)) > current_device_info().smem_optin)
    return "this head dim's tile needs more shared memory per block than the device offers";
  return nullptr;
}

void sm80_forward(const ForwardParams& p) {
  if (p.dtype == DType::f16)
    launch_dtype<__half>(p);
  else
    launch_dtype<__nv_bfloat16>(p);
}

}  // namespace flashattn::detail::cuda
