// bf16 dot-product kernels of the CPU forward (avx512_bf16 `vdpbf16ps`). Built
// in their own translation unit with per-function target attributes, so the
// library still runs on any x86-64: callers must check bf16_dot_enabled() first.
//
// Operands are "bf16 pairs": one uint32 holds two consecutive elements along the
// reduction dimension (low half first), which is what vdpbf16ps multiplies and
// adds: C[r][n] += A[r][k].lo * B[k][n].lo + A[r][k].hi * B[k][n].hi.
#pragma once
#include <cstddef>
#include <cstdint>

#include "params.hpp"

namespace flashattn::detail::cpu {

// Which bf16 product kernel the forward uses, chosen once per process:
//  amx     AMX tiles (tdpbf16ps), when the CPU has amx_bf16 and Linux grants the
//          tile state (arch_prctl ARCH_REQ_XCOMP_PERM);
//  avx512  avx512_bf16 vdpbf16ps, only when asked for (FLASHATTN_CPU_BF16=avx512):
//          on the Xeon measured in docs/perf/cpu.md it runs at half the rate of
//          fp32 FMAs, so it loses to the fp32 kernels;
//  none    the fp32 kernels on converted tiles. FLASHATTN_CPU_NO_BF16=1 (or
//          FLASHATTN_CPU_BF16=off) forces it.
enum class Bf16Kernel { none, avx512, amx };
Bf16Kernel bf16_kernel();

// C (M x N floats, row stride ldc) (+)= A (M x Kp pairs, row stride lda) *
// B (Kp x N pairs, row stride ldb). N must be a multiple of 16; with amx, M and
// Kp too (the caller pads with zeros).
void bf16_gemm(Bf16Kernel kern, std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
               std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C, std::size_t ldc,
               bool accumulate);
void bf16_gemm_amx(std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
                   std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C,
                   std::size_t ldc, bool accumulate);
bool bf16_amx_usable();  // CPU check and the kernel's permission, once

// dst[r * ldd + c] = bf16(src[r * lds + c]) (round to nearest even) for c < n,
// then zeros for n <= c < nz; n and nz multiples of 16.
void bf16_round_rows(std::size_t rows, std::size_t n, std::size_t nz, const float* src,
                     std::size_t lds, std::uint16_t* dst, std::size_t ldd);

// dst[c] = bf16(src[c]) for c < n (any n), round to nearest even.
void bf16_store_row(std::uint16_t* dst, const float* src, std::size_t n);

// One row of bf16 elements (D of them, from element offset off of base) as
// kp >= ceil(D/2) pairs, zero-padded.
void bf16_load_pairs(const void* base, std::int64_t off, std::size_t D, std::size_t kp,
                     std::uint32_t* dst);

// Rows [j0, j0 + cols) of head hk of one sequence's K, transposed into pairs:
// dst[dp * ld + c] = (K[c][2dp], K[c][2dp+1]) for dp < kp (>= ceil(D/2)), c < ld
// (columns cols..ld and pairs past D zero): the B operand of S = Q K^T.
void bf16_pack_kt(const ForwardParams& p, int b, std::int64_t row0, std::int64_t j0,
                  std::int64_t cols, int hk, std::size_t ld, std::size_t kp, std::uint32_t* dst);

// The same rows of V in key pairs: dst[jp * Dp + d] = (V[2jp][d], V[2jp+1][d])
// for jp < nrows/2, d < Dp (keys >= cols and columns >= D zero): the B operand
// of O += P V. nrows even, Dp a multiple of 16.
void bf16_pack_v(const ForwardParams& p, int b, std::int64_t row0, std::int64_t j0,
                 std::int64_t cols, int hk, std::size_t Dp, std::size_t nrows, std::uint32_t* dst);

}  // namespace flashattn::detail::cpu
