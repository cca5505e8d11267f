// Tensor maps for the bulk tensor copy engine (TMA): built on the host through the
// driver's cuTensorMapEncodeTiled (fetched with cudaGetDriverEntryPointByVersion so
// that the library needs no -lcuda at load time), used on the device through
// cuda::ptx::cp_async_bulk_tensor completing on an mbarrier.
#pragma once
#include <cuda.h>
#include <cuda/ptx>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common.cuh"

namespace flashattn::detail::cuda::sm90 {

// One (rows, heads, d) operand seen as a 4-D tensor (d, rows, heads, batch), d
// innermost; box = (64 columns = 128 bytes, box_rows, 1, 1) with 128-byte swizzle,
// so that each copy lands as one swizzled [box_rows][64] sub-tile that wgmma reads
// directly. Varlen passes batch = 1 and rows = total tokens.
struct OperandGeometry {
  const void* base;
  std::uint64_t d, rows, heads, batch;                 // extents (elements)
  std::uint64_t row_stride, head_stride, batch_stride;  // elements
  std::uint32_t box_rows;
};

inline CUtensorMap make_tensor_map(DType dtype, const OperandGeometry& g) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    FA_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || fn == nullptr)
      throw Error(ErrorCode::cuda_error, "cuTensorMapEncodeTiled is not available from the CUDA driver");
    return reinterpret_cast<Encode>(fn);
  }();
  const std::uint64_t es = 2;  // bf16/fp16 only
  const cuuint64_t dims[4] = {g.d, g.rows, g.heads, g.batch};
  // Byte strides of dims 1..3. A dimension of extent 1 is never stepped: give it a
  // legal stride (multiple of 16) whatever the caller's.
  auto legal = [&](std::uint64_t extent, std::uint64_t stride) { return extent > 1 ? stride * es : 16; };
  const cuuint64_t strides[3] = {legal(g.rows, g.row_stride), legal(g.heads, g.head_stride),
                                 legal(g.batch, g.batch_stride)};
  const cuuint32_t box[4] = {64, g.box_rows, 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, dtype == DType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                            4, const_cast<void*>(g.base), dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(ErrorCode::cuda_error, "cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)));
  return map;
}

// The backward's fp32 dQ accumulator ([rows][heads][d], dense) as a 3-D tensor
// (d, heads, rows) for cp.reduce.async.bulk.tensor: boxes of 32 columns (128 bytes,
// 128-byte swizzle) x 1 head x box_rows rows.
inline CUtensorMap make_reduce_map(float* base, std::uint64_t d, std::uint64_t heads, std::uint64_t rows,
                                   std::uint32_t box_rows) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
    FA_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || fn == nullptr)
      throw Error(ErrorCode::cuda_error, "cuTensorMapEncodeTiled is not available from the CUDA driver");
    return reinterpret_cast<Encode>(fn);
  }();
  const cuuint64_t dims[3] = {d, heads, rows};
  const cuuint64_t strides[2] = {d * 4, heads * d * 4};  // d % 8 == 0: multiples of 16 bytes
  const cuuint32_t box[3] = {32, 1, box_rows};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, base, dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(ErrorCode::cuda_error, "cuTensorMapEncodeTiled (dQ reduce map) failed with CUresult " + std::to_string(int(r)));
  return map;
}

// Copies box (c0.., row, head, batch) of `map` into smem, completing on `bar`
// (cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes).
__device__ __forceinline__ void tma_load(void* smem, const CUtensorMap* map, int c, int row, int head, int batch,
                                         std::uint64_t* bar) {
  const std::int32_t coords[4] = {c, row, head, batch};
  ::cuda::ptx::cp_async_bulk_tensor(::cuda::ptx::space_cluster, ::cuda::ptx::space_global, smem, map, coords, bar);
}

// Spins on the mbarrier phase with the given parity (try_wait suspends in hardware
// for a while before returning false, so the loop is not a hot spin).
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, std::uint32_t parity) {
  while (!::cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}

__device__ __forceinline__ void mbar_expect_tx(std::uint64_t* bar, std::uint32_t bytes) {
  ::cuda::ptx::mbarrier_arrive_expect_tx(::cuda::ptx::sem_release, ::cuda::ptx::scope_cta, ::cuda::ptx::space_shared,
                                         bar, bytes);
}

__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar) { (void)::cuda::ptx::mbarrier_arrive(bar); }

}  // namespace flashattn::detail::cuda::sm90
