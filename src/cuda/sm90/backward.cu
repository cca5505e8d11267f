// Hopper backward (sm_90a): launch, support rules and the fallbacks. The scratch
// (D = rowsum(dO * O), the zeroed fp32 dQ accumulator) has the layout the portable and
// sm80 kernels use (portable/backward_scratch.cuh), filled and converted here by
// 16-byte kernels (by the shared ones for tensors off 16-byte addressing); in
// deterministic mode dQ comes from the sm80 tensor-core dQ pass (keys summed in a
// fixed order) and the kernel here does dK/dV only.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"
#include "cuda/families.hpp"
#include "cuda/sm90/backward_kernel.cuh"
#include "cuda/workspace.hpp"

namespace flashattn::detail::cuda {
namespace sm90 {
namespace {

int bucket(int head_dim) { return head_dim <= 64 ? 64 : (head_dim <= 128 ? 128 : 256); }

// TMA describes a global tensor by a 16-byte aligned base and strides that are
// multiples of 16 bytes (8 elements), below 2^40 bytes.
bool tma_operand_ok(const void* ptr, const OperandStrides& st, bool varlen, int batch, int heads, std::int64_t rows) {
  auto good = [](std::int64_t stride_el, std::int64_t extent) {
    return extent <= 1 || (stride_el > 0 && stride_el % 8 == 0 && stride_el * 2 < (std::int64_t(1) << 40));
  };
  return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && good(st.row, rows) && good(st.head, heads) &&
         (varlen || good(st.batch, batch));
}

bool aligned16(const void* ptr) { return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0; }
bool strides8(const OperandStrides& s) { return s.batch % 8 == 0 && s.row % 8 == 0 && s.head % 8 == 0; }

// What only the backward call knows: dO goes through TMA, dK/dV are written in
// 4-byte pairs (16-byte rule as the sm80 kernel, which takes the call otherwise).
bool gradients_ok(const BackwardParams& p) {
  const bool varlen = p.cu_seqlens_q != nullptr;
  const std::int64_t qrows = varlen ? p.total_q : p.seqlen_q;
  return tma_operand_ok(p.dout, p.dout_strides, varlen, p.batch, p.heads_q, qrows) && aligned16(p.dk) &&
         aligned16(p.dv) && strides8(p.dk_strides) && strides8(p.dv_strides) &&
         (!p.deterministic || (aligned16(p.dq) && strides8(p.dq_strides)));  // sm80's dQ pass writes pairs
}

// ---- Scratch kernels (v4, docs/perf/cuda_backward.md): the shared ones
// (portable/backward_common.cuh) read O/dO 2 bytes a lane and convert dQ 4 bytes in /
// 2 bytes out a thread with a division per element; B·S·H·D is the same for every S
// of the bench grid, so their ~470 MB per call weighed most at S = 512. These move 16
// bytes per access (D = 64, S = 512: 0.87 -> 0.76 ms a call on the H200); calls whose
// tensors cannot be read 16 bytes at a time take the shared ones.

// 16-byte accesses along a row: a 16-byte base and strides of whole 8-element units
// (the batch stride too: operand_offset multiplies it in varlen mode as well).
bool vec_ok(const void* ptr, const OperandStrides& s) { return aligned16(ptr) && strides8(s); }

// D = rowsum(dO * O): one block per (batch, row); each head is a group of `gsize`
// lanes (head_dim / 8 rounded up to a power of two), a lane 8 columns (one 16-byte
// load of O and of dO), summed by shuffles inside the group.
template <typename T>
__global__ void __launch_bounds__(256) dsum_vec_kernel(const BackwardParams p, float* __restrict__ dsum, int gsize) {
  const int b = int(blockIdx.x / p.seqlen_q);
  const std::int64_t i = blockIdx.x % p.seqlen_q;
  const SequenceView s = sequence(p, b);
  if (i >= s.len_q) return;  // the whole block
  const int lane = threadIdx.x % 32, chunks = p.head_dim / 8, units = p.heads_q * gsize;
  const T* o = static_cast<const T*>(p.out) + operand_offset(p.out_strides, b, s.q_row0, i, 0);
  const T* d = static_cast<const T*>(p.dout) + operand_offset(p.dout_strides, b, s.q_row0, i, 0);
  float* dst = dsum + bwd::scratch_row(p, b, s, i) * p.heads_q;
  // Warp-uniform trip count: every lane takes part in the shuffles.
  for (int u0 = int(threadIdx.x) - lane; u0 < units; u0 += blockDim.x) {
    const int u = u0 + lane, h = u / gsize, c = u % gsize;
    float acc = 0.0f;
    if (u < units && c < chunks) {
      const uint4 ov = *reinterpret_cast<const uint4*>(o + h * p.out_strides.head + 8 * c);
      const uint4 dv = *reinterpret_cast<const uint4*>(d + h * p.dout_strides.head + 8 * c);
      const std::uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w}, dw[4] = {dv.x, dv.y, dv.z, dv.w};
#pragma unroll
      for (int k = 0; k < 4; ++k)
        acc += unpack_half<T>(ow[k], 0) * unpack_half<T>(dw[k], 0) + unpack_half<T>(ow[k], 1) * unpack_half<T>(dw[k], 1);
    }
    for (int off = gsize / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (u < units && c == 0) dst[h] = acc;
  }
}

// dQ from its fp32 accumulator: one block per (batch, row); a thread 8 columns (two
// 16-byte loads, one 16-byte store).
template <typename T>
__global__ void __launch_bounds__(256) convert_dq_vec_kernel(const BackwardParams p, const float* __restrict__ acc) {
  const int b = int(blockIdx.x / p.seqlen_q);
  const std::int64_t i = blockIdx.x % p.seqlen_q;
  const SequenceView s = sequence(p, b);
  if (i >= s.len_q) return;
  const int chunks = p.head_dim / 8, units = p.heads_q * chunks;
  const float* src = acc + bwd::scratch_row(p, b, s, i) * p.heads_q * p.head_dim;
  T* dst = static_cast<T*>(p.dq) + operand_offset(p.dq_strides, b, s.q_row0, i, 0);
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int h = u / chunks, c = u - h * chunks;
    const float4 x = *reinterpret_cast<const float4*>(src + 8 * u);  // h * head_dim + 8c
    const float4 y = *reinterpret_cast<const float4*>(src + 8 * u + 4);
    *reinterpret_cast<uint4*>(dst + h * p.dq_strides.head + 8 * c) =
        make_uint4(pack2<T>(x.x, x.y), pack2<T>(x.z, x.w), pack2<T>(y.x, y.y), pack2<T>(y.z, y.w));
  }
}

// bwd::prepare with the vectorized row sums (same layout: the deterministic dQ pass
// and bwd::finish read it); falls back to it when O or dO cannot be read 16 bytes at a
// time (TMA's rule for dO lets a stride of an extent-1 dim be anything).
template <typename T>
bwd::Scratch prepare_vec(const BackwardParams& p, bool with_dq_acc) {
  if (!vec_ok(p.out, p.out_strides) || !vec_ok(p.dout, p.dout_strides)) return bwd::prepare(p, with_dq_acc, false);
  const cudaStream_t st = stream_of(p);
  auto round = [](std::size_t n) { return (n + 63) & ~std::size_t(63); };  // as bwd::prepare
  const std::size_t rows = std::size_t(p.total_q) * p.heads_q;
  const std::size_t n_dsum = round(rows), n_dq = with_dq_acc ? round(rows * p.head_dim) : 0;
  float* base = static_cast<float*>(workspace((n_dsum + n_dq) * sizeof(float), st));
  bwd::Scratch s;
  s.dsum = base;
  if (with_dq_acc) {
    s.dq_acc = base + n_dsum;
    FA_CUDA_CHECK(cudaMemsetAsync(s.dq_acc, 0, n_dq * sizeof(float), st));
  }
  const std::int64_t blocks = p.seqlen_q * std::int64_t(p.batch);
  if (blocks > 0) {
    int g = 1;
    while (g < p.head_dim / 8) g *= 2;
    dsum_vec_kernel<T><<<unsigned(blocks), 256, 0, st>>>(p, s.dsum, g);
    FA_CUDA_CHECK_LAUNCH();
  }
  return s;
}

template <typename T>
void finish_vec(const BackwardParams& p, const bwd::Scratch& s) {
  if (s.dq_acc == nullptr || !vec_ok(p.dq, p.dq_strides)) return bwd::finish(p, s);
  if (p.seqlen_q > 0) {
    convert_dq_vec_kernel<T><<<unsigned(p.seqlen_q * p.batch), 256, 0, stream_of(p)>>>(p, s.dq_acc);
    FA_CUDA_CHECK_LAUNCH();
  }
}

template <int D, typename T, bool kSoftcap, bool kDq>
void launch_kernel(const BackwardParams& p, const bwd::Scratch& sc) {
  constexpr DqMode Mode = default_dq_mode(D);
  using Cfg = BwdConfig<D, Mode>;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const std::int64_t nkb = (p.seqlen_k + Cfg::kBlockN - 1) / Cfg::kBlockN;
  const std::int64_t grid = nkb * p.heads_kv * std::int64_t(p.batch);
  if (grid == 0) return;
  BwdArgs a{};
  a.p = p;
  a.dsum = sc.dsum;
  a.dq_acc = sc.dq_acc;
  a.nkb = int(nkb);
  a.scale_log2 = p.scale * kBwdLog2e;
  a.cap_pre = p.softcap > 0.0f ? p.scale / p.softcap : 1.0f;
  a.softcap_log2 = p.softcap * kBwdLog2e;
  const std::uint64_t nb = varlen ? 1 : std::uint64_t(p.batch);
  const std::uint64_t qrows = std::uint64_t(varlen ? p.total_q : p.seqlen_q);
  const std::uint64_t krows = std::uint64_t(varlen ? p.total_k : p.seqlen_k);
  const std::uint64_t hd = std::uint64_t(p.head_dim);  // columns past it (padded bucket) read as zero
  auto qmap = [&](const void* base, const OperandStrides& s) {
    return make_tensor_map(p.dtype, {base, hd, qrows, std::uint64_t(p.heads_q), nb, std::uint64_t(s.row),
                                     std::uint64_t(s.head), std::uint64_t(s.batch), std::uint32_t(Cfg::kBlockM)});
  };
  auto kmap = [&](const void* base, const OperandStrides& s) {
    return make_tensor_map(p.dtype, {base, hd, krows, std::uint64_t(p.heads_kv), nb, std::uint64_t(s.row),
                                     std::uint64_t(s.head), std::uint64_t(s.batch), std::uint32_t(Cfg::kBlockN)});
  };
  a.tq = qmap(p.q, p.q_strides);
  a.tdo = qmap(p.dout, p.dout_strides);
  a.tk = kmap(p.k, p.k_strides);
  a.tv = kmap(p.v, p.v_strides);
  if (kDq)
    a.tdq = make_reduce_map(sc.dq_acc, hd, std::uint64_t(p.heads_q), std::uint64_t(p.total_q), Cfg::kBlockM);
  auto kernel = backward_kernel<D, T, kSoftcap, kDq, Mode>;
  FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  kernel<<<unsigned(grid), Cfg::kThreads, Cfg::kSmemBytes, stream_of(p)>>>(a);
  FA_CUDA_CHECK_LAUNCH();
}

template <int D, typename T, bool kSoftcap>
void launch_dq(const BackwardParams& p, const bwd::Scratch& sc) {
  if (sc.dq_acc != nullptr)
    launch_kernel<D, T, kSoftcap, true>(p, sc);
  else
    launch_kernel<D, T, kSoftcap, false>(p, sc);
}

template <typename T>
void launch_dtype(const BackwardParams& p, const bwd::Scratch& sc) {
  const bool cap = p.softcap > 0.0f;
  const int d = bucket(p.head_dim);
  if (d == 64)
    cap ? launch_dq<64, T, true>(p, sc) : launch_dq<64, T, false>(p, sc);
  else if (d == 128)
    cap ? launch_dq<128, T, true>(p, sc) : launch_dq<128, T, false>(p, sc);
  else
    cap ? launch_dq<256, T, true>(p, sc) : launch_dq<256, T, false>(p, sc);
}

}  // namespace
}  // namespace sm90

const char* sm90_backward_unsupported(const ForwardParams& p) {
  if (p.dtype != DType::bf16 && p.dtype != DType::f16) return "the wgmma backward takes bf16 and fp16 only";
  if (p.head_dim % 8 != 0 || p.head_dim > 256)
    return "the wgmma backward takes head dims that are multiples of 8 up to 256 (larger ones: cuda_portable)";
  if (p.bias != nullptr) return "no attention bias in the wgmma backward (cuda_sm80 has it)";
  if (p.alibi != nullptr) return "no ALiBi in the wgmma backward (cuda_sm80 has it)";
  const bool varlen = p.cu_seqlens_q != nullptr;
  const std::int64_t qrows = varlen ? p.total_q : p.seqlen_q, krows = varlen ? p.total_k : p.seqlen_k;
  if (p.seqlen_q >= (std::int64_t(1) << 29) || p.seqlen_k >= (std::int64_t(1) << 29))
    return "sequence lengths must stay below 2^29 (32-bit mask arithmetic)";
  if (qrows >= (std::int64_t(1) << 31) - 128 || krows >= (std::int64_t(1) << 31) - 128)
    return "more rows than TMA coordinates hold";
  if ((p.seqlen_q / 64 + 1) * (p.heads_q / p.heads_kv) >= (std::int64_t(1) << 31))
    return "query tiles times GQA group size must fit in 32 bits";
  if ((p.seqlen_k + 63) / 64 * p.heads_kv * std::int64_t(p.batch) >= (std::int64_t(1) << 31))  // D = 256: 64 keys
    return "too many key blocks for one grid";
  if (!sm90::tma_operand_ok(p.q, p.q_strides, varlen, p.batch, p.heads_q, qrows) ||
      !sm90::tma_operand_ok(p.k, p.k_strides, varlen, p.batch, p.heads_kv, krows) ||
      !sm90::tma_operand_ok(p.v, p.v_strides, varlen, p.batch, p.heads_kv, krows))
    return "q/k/v need a 16-byte aligned base and strides that are multiples of 8 elements (TMA)";
  // D = rowsum(dO * O): 16-byte loads where out allows them, else the shared scratch
  // kernel (element by element): no rule for out here.
  return nullptr;
}

void sm90_backward(const BackwardParams& p) {
  if (p.batch == 0) return;
  // Support is decided before dout and the gradients are known (see api.cpp);
  // calls whose dout cannot go through TMA, or whose gradients are misaligned,
  // take the sm80 kernel where it can run them (it falls back to the portable one
  // itself on misaligned gradients), else the portable kernel.
  if (!sm90::gradients_ok(p)) {
    if (sm80_backward_unsupported(p) == nullptr)
      sm80_backward(p);
    else
      portable_backward(p);
    return;
  }
  const bool det = p.deterministic;
  const bool bf = p.dtype == DType::bf16;
  const bwd::Scratch sc = bf ? sm90::prepare_vec<__nv_bfloat16>(p, !det) : sm90::prepare_vec<__half>(p, !det);
  if (bf)
    sm90::launch_dtype<__nv_bfloat16>(p, sc);
  else
    sm90::launch_dtype<__half>(p, sc);
  if (det) sm80_deterministic_dq(p, sc.dsum);
  if (bf)
    sm90::finish_vec<__nv_bfloat16>(p, sc);
  else
    sm90::finish_vec<__half>(p, sc);
}

}  // namespace flashattn::detail::cuda
