// The sm80 tensor-core backward (fp16/bf16, head dims up to 256; 96, 128, 192 and
// 256 run as themselves, others padded up to 64/96/128/192/256; above 128 the
// dK/dV columns are split over two blocks): launch and support rules. The
// scratch, the dQ/dbias conversions and the deterministic passes are shared with
// the portable backward (portable/backward_scratch.cuh).
#include <climits>
#include <cstdint>

#include "cuda/families.hpp"
#include "cuda/portable/launch_util.cuh"
#include "cuda/sm80/backward_dq.cuh"
#include "cuda/sm80/backward_kernel.cuh"

namespace flashattn::detail::cuda {

namespace {

int bucket(int head_dim) {
  for (int d : {64, 96, 128, 192, 256})
    if (head_dim <= d) return d;
  return 0;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<std::uintptr_t>(ptr) & 15u) == 0; }
bool stride_ok(const OperandStrides& s) { return s.batch % 8 == 0 && s.row % 8 == 0 && s.head % 8 == 0; }

// What only the backward call knows (dout and the gradients): cp.async reads dO
// in 16-byte rows and dK/dV are written in 4-byte pairs.
bool gradients_ok(const BackwardParams& p) {
  return aligned16(p.dout) && stride_ok(p.dout_strides) && aligned16(p.dk) && aligned16(p.dv) &&
         stride_ok(p.dk_strides) && stride_ok(p.dv_strides) &&
         (!p.deterministic || (aligned16(p.dq) && stride_ok(p.dq_strides)));  // the dQ pass writes pairs
}

// The launch shapes, per head-dim bucket (see launch_dtype). Two Q/dO stages
// everywhere they fit; D = 128 keeps a one-stage variant (90 KiB) for the
// 99 KiB of sm_86/sm_89, where two stages (105 KiB) do not.
using Cfg64 = sm80bwd::BwdTraits<64, 64, 128, 2>;    // 80 KiB
using Cfg96 = sm80bwd::BwdTraits<96, 64, 128, 2>;    // 144 KiB
using Cfg128 = sm80bwd::BwdTraits<128, 32, 128, 2>;  // 105 KiB
using Cfg128s1 = sm80bwd::BwdTraits<128, 32, 128, 1>;
// Above 128 columns, two column slices per key block (kSplit = 2): per block the
// same dK/dV registers as D = 96 / 128. D = 192 with one stage (160.5 KiB) fits
// an A100; D = 256 takes 128 keys where 200.5 KiB fit (Hopper), else 64 keys
// (132.5 KiB).
using Cfg192 = sm80bwd::BwdTraits<192, 64, 128, 1, 1, 2>;
using Cfg256 = sm80bwd::BwdTraits<256, 32, 128, 2, 1, 2>;
using Cfg256k64 = sm80bwd::BwdTraits<256, 32, 64, 2, 1, 2>;
// The smallest shared memory a head-dim bucket can run with.
std::size_t smem_bytes(int d) {
  switch (d) {
    case 64: return Cfg64::kSmemBytes;
    case 96: return Cfg96::kSmemBytes;  // above sm_86/sm_89's 99 KiB
    case 128: return Cfg128s1::kSmemBytes;
    case 192: return Cfg192::kSmemBytes;
    default: return Cfg256k64::kSmemBytes;
  }
}

// The deterministic dQ pass: one block per (query tile, head), key tiles summed in order.
template <typename T, int kD>
void dq_pass(const BackwardParams& p, const float* dsum) {
  using Dq = sm80bwd::DqTraits<kD>;
  const std::int64_t qblocks = (p.seqlen_q + Dq::kBM - 1) / Dq::kBM * p.heads_q * std::int64_t(p.batch);
  if (qblocks > 0) {
    auto kernel = sm80bwd::dq_kernel<T, kD>;
    allow_dynamic_smem(kernel, Dq::kSmemBytes);
    kernel<<<unsigned(qblocks), Dq::kThreads, Dq::kSmemBytes, stream_of(p)>>>(p, dsum);
    FA_CUDA_CHECK_LAUNCH();
  }
}

template <typename T>
void dq_pass_dtype(const BackwardParams& p, const float* dsum) {
  switch (bucket(p.head_dim)) {
    case 64: return dq_pass<T, 64>(p, dsum);
    case 96: return dq_pass<T, 96>(p, dsum);
    case 128: return dq_pass<T, 128>(p, dsum);
    case 192: return dq_pass<T, 192>(p, dsum);
    default: return dq_pass<T, 256>(p, dsum);
  }
}

template <typename T, typename Tr>
void launch(const BackwardParams& p) {
  constexpr int kD = Tr::kDA * Tr::kSplit;
  const bool det = p.deterministic;
  const bool want_dbias = p.dbias != nullptr;
  const bool dbias_atomic = want_dbias && (!det || bwd::dbias_unreduced(p));
  const bwd::Scratch sc = bwd::prepare(p, !det, dbias_atomic);
  bwd::Scratch main_sc = sc;
  if (!dbias_atomic) main_sc.dbias_acc = nullptr;
  const std::int64_t nkb = (p.seqlen_k + Tr::kBN - 1) / Tr::kBN;
  const std::int64_t blocks = nkb * p.heads_kv * std::int64_t(p.batch) * Tr::kSplit;
  if (blocks > 0) {
    auto kernel = sm80bwd::dkdv_kernel<T, kD, Tr::kBM, Tr::kBN, Tr::kStages, Tr::kMinBlocks, Tr::kSplit>;
    allow_dynamic_smem(kernel, Tr::kSmemBytes);
    kernel<<<unsigned(blocks), Tr::kThreads, Tr::kSmemBytes, stream_of(p)>>>(p, main_sc);
    FA_CUDA_CHECK_LAUNCH();
  }
  // Deterministic mode: dQ by a pass over query tiles that sums key tiles in
  // order, and a broadcast dbias by the portable pass; the dK/dV above are
  // deterministic by construction.
  if (det) dq_pass<T, kD>(p, sc.dsum);
  if (want_dbias && !dbias_atomic) bwd::deterministic_passes(p, sc, false, true);
  bwd::finish(p, sc);
}

template <typename T>
void launch_dtype(const BackwardParams& p) {
  switch (bucket(p.head_dim)) {
    // 128 keys (8 warps) per block: half the dQ atomics and Q/dO reloads of 64;
    // the query tile is what the dK/dV/S/dP registers leave room for.
    case 64: return launch<T, Cfg64>(p);
    case 96: return launch<T, Cfg96>(p);
    case 128:
      if (Cfg128::kSmemBytes <= current_device_info().smem_optin) return launch<T, Cfg128>(p);
      return launch<T, Cfg128s1>(p);
    case 192: return launch<T, Cfg192>(p);
    default:
      if (Cfg256::kSmemBytes <= current_device_info().smem_optin) return launch<T, Cfg256>(p);
      return launch<T, Cfg256k64>(p);
  }
}

}  // namespace

const char* sm80_backward_unsupported(const ForwardParams& p) {
  if (p.dtype != DType::f16 && p.dtype != DType::bf16) return "tensor cores here take float16/bfloat16 only";
  if (p.head_dim % 8 != 0) return "head dim must be a multiple of 8 (16-byte rows)";
  if (p.head_dim > 256) return "head dim above 256";
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v) || !aligned16(p.out))
    return "q, k, v and out must be 16-byte aligned";
  if (!stride_ok(p.q_strides) || !stride_ok(p.k_strides) || !stride_ok(p.v_strides) || !stride_ok(p.out_strides))
    return "batch/row/head strides of q, k, v and out must be multiples of 8 elements";
  if (p.seqlen_q > INT_MAX - 256 || p.seqlen_k > INT_MAX - 256)
    return "sequence lengths must stay below 2^31 - 256 (32-bit tile indices)";
  if ((p.seqlen_q / 32 + 1) * (p.heads_q / p.heads_kv) > INT_MAX)
    return "query tiles times GQA group size must fit in 32 bits";
  if (smem_bytes(bucket(p.head_dim)) > current_device_info().smem_optin)
    return "this head dim's backward tiles need more shared memory per block than the device offers";
  return nullptr;
}

void sm80_deterministic_dq(const BackwardParams& p, const float* dsum) {
  if (p.dtype == DType::f16)
    dq_pass_dtype<__half>(p, dsum);
  else
    dq_pass_dtype<__nv_bfloat16>(p, dsum);
}

void sm80_backward(const BackwardParams& p) {
  if (p.batch == 0) return;
  if (!gradients_ok(p)) {
    // Support is decided before dout and the gradients are known (see api.cpp);
    // misaligned ones take the portable kernel rather than fail.
    portable_backward(p);
    return;
  }
  switch (p.dtype) {
    case DType::f16: launch_dtype<__half>(p); break;
    default: launch_dtype<__nv_bfloat16>(p); break;
  }
}

}  // namespace flashattn::detail::cuda
