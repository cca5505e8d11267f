// The portable (SIMT, sm_75+) FlashAttention-2 backward: every dtype, head dims
// 1..256 (padded up to 32/64/128/256), every masking and score feature.
// Also home of the backward scratch kernels shared with the sm80 family.
#include "cuda/families.hpp"
#include "cuda/portable/backward_common.cuh"
#include "cuda/portable/backward_kernels.cuh"

namespace flashattn::detail::cuda {

namespace bwd {

Scratch prepare(const BackwardParams& p, bool with_dq_acc, bool with_dbias_acc) {
  switch (p.dtype) {
    case DType::f16: return prepare_t<__half>(p, with_dq_acc, with_dbias_acc);
    case DType::bf16: return prepare_t<__nv_bfloat16>(p, with_dq_acc, with_dbias_acc);
    default: return prepare_t<float>(p, with_dq_acc, with_dbias_acc);
  }
}

void finish(const BackwardParams& p, const Scratch& s) {
  switch (p.dtype) {
    case DType::f16: finish_t<__half>(p, s); break;
    case DType::bf16: finish_t<__nv_bfloat16>(p, s); break;
    default: finish_t<float>(p, s); break;
  }
}

}  // namespace bwd

namespace {

using pbwd::Cfg;

template <class C, typename T>
void passes(const BackwardParams& p, const bwd::Scratch& sc, bool dq, bool dbias) {
  const cudaStream_t st = stream_of(p);
  const int smem = int(sizeof(pbwd::Smem<C>));
  const std::int64_t nkb = (p.seqlen_k + C::BK - 1) / C::BK;
  const std::int64_t nqb = (p.seqlen_q + C::BQ - 1) / C::BQ;
  const std::int64_t q_blocks = nqb * p.heads_q * std::int64_t(p.batch);
  if (dq && q_blocks > 0) {
    FA_CUDA_CHECK(cudaFuncSetAttribute(pbwd::dq_kernel<C, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    pbwd::dq_kernel<C, T><<<unsigned(q_blocks), C::NT, smem, st>>>(p, sc.dsum);
    FA_CUDA_CHECK_LAUNCH();
  }
  const std::int64_t db_blocks = nqb * nkb * p.dbias_batch_size * std::int64_t(p.dbias_heads_size);
  if (dbias && db_blocks > 0) {
    FA_CUDA_CHECK(cudaFuncSetAttribute(pbwd::dbias_kernel<C, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    pbwd::dbias_kernel<C, T><<<unsigned(db_blocks), C::NT, smem, st>>>(p, sc.dsum);
    FA_CUDA_CHECK_LAUNCH();
  }
}

template <class C, typename T>
void run(const BackwardParams& p) {
  const cudaStream_t st = stream_of(p);
  const bool det = p.deterministic;
  const bool want_dbias = p.dbias != nullptr;
  // Atomics into dbias are order-independent when every element has one contributor.
  const bool dbias_atomic = want_dbias && (!det || bwd::dbias_unreduced(p));
  const bwd::Scratch sc = bwd::prepare(p, !det, dbias_atomic);
  bwd::Scratch main_sc = sc;
  if (!dbias_atomic) main_sc.dbias_acc = nullptr;

  const int smem = int(sizeof(pbwd::Smem<C>));
  const std::int64_t nkb = (p.seqlen_k + C::BK - 1) / C::BK;
  const std::int64_t kv_blocks = nkb * p.heads_kv * std::int64_t(p.batch);
  if (kv_blocks > 0) {
    FA_CUDA_CHECK(cudaFuncSetAttribute(pbwd::dkdv_kernel<C, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    pbwd::dkdv_kernel<C, T><<<unsigned(kv_blocks), C::NT, smem, st>>>(p, main_sc);
    FA_CUDA_CHECK_LAUNCH();
  }
  passes<C, T>(p, sc, det, want_dbias && !dbias_atomic);
  bwd::finish(p, sc);
}

template <typename T>
void passes_dtype(const BackwardParams& p, const bwd::Scratch& sc, bool dq, bool dbias) {
  if (p.head_dim <= 32) return passes<Cfg<32, 32, 32, 128>, T>(p, sc, dq, dbias);
  if (p.head_dim <= 64) return passes<Cfg<64, 32, 32, 128>, T>(p, sc, dq, dbias);
  if (p.head_dim <= 128) return passes<Cfg<128, 32, 16, 128>, T>(p, sc, dq, dbias);
  return passes<Cfg<256, 16, 8, 128>, T>(p, sc, dq, dbias);
}

// Tile shapes per padded head dim: keep dK/dV at 16-32 registers per accumulator
// and the shared tiles under sm_75's 64 KiB.
template <typename T>
void run_dtype(const BackwardParams& p) {
  if (p.head_dim <= 32) return run<Cfg<32, 32, 32, 128>, T>(p);
  if (p.head_dim <= 64) return run<Cfg<64, 32, 32, 128>, T>(p);
  if (p.head_dim <= 128) return run<Cfg<128, 32, 16, 128>, T>(p);
  return run<Cfg<256, 16, 8, 128>, T>(p);
}

}  // namespace

void bwd::deterministic_passes(const BackwardParams& p, const Scratch& s, bool dq, bool dbias) {
  switch (p.dtype) {
    case DType::f16: passes_dtype<__half>(p, s, dq, dbias); break;
    case DType::bf16: passes_dtype<__nv_bfloat16>(p, s, dq, dbias); break;
    default: passes_dtype<float>(p, s, dq, dbias); break;
  }
}

const char* portable_backward_unsupported(const ForwardParams& p) {
  if (p.head_dim < 1 || p.head_dim > 256) return "head dim must be 1..256";
  return nullptr;
}

void portable_backward(const BackwardParams& p) {
  if (p.batch == 0) return;  // with no query rows the kernels still write dK = dV = 0
  switch (p.dtype) {
    case DType::f16: run_dtype<__half>(p); break;
    case DType::bf16: run_dtype<__nv_bfloat16>(p); break;
    default: run_dtype<float>(p); break;
  }
}

}  // namespace flashattn::detail::cuda
