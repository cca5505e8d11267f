// AMX tile products of the CPU forward (see bf16_dot.hpp). Only the functions
// marked FA_AMX_TARGET use AMX instructions, and they are reached only after
// bf16_amx_usable() has checked the CPU and obtained the tile state from Linux.
//
// Tiles: 8 registers of 16 rows x 64 bytes. A tile of A is 16 rows x 16 bf16
// pairs (row-major pairs: the Q and P layouts); a tile of B is 16 pair-rows x
// 16 columns (the packed K^T and V layouts); tdpbf16ps adds A B into a 16 x 16
// fp32 tile. Blocks of 2 x 2 result tiles use all 8 registers (4 C, 2 A, 2 B).
#include <cstdlib>
#include <cstring>

#include "cpu/bf16_dot.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define FA_AMX_AVAILABLE 1
#define FA_AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))
#else
#define FA_AMX_AVAILABLE 0
#endif

namespace flashattn::detail::cpu {

#if FA_AMX_AVAILABLE

bool bf16_amx_usable() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    if (!amx_bf16 || !amx_tile) return false;
    // Linux hands out the 8 KiB tile state only on request (ARCH_REQ_XCOMP_PERM
    // for XFEATURE_XTILEDATA); it fails on kernels or VMs that do not support it.
    constexpr long kReqXcompPerm = 0x1023, kXtileData = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  }();
  return ok;
}

namespace {

struct TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// 2 x 2 (or smaller, NM/NN in {1, 2}) result tiles over Kp pairs (multiple of 16).
// Tiles 0-3: C; 4-5: A; 6-7: B. Tile numbers are immediates, hence the template.
template <int NM, int NN>
FA_AMX_TARGET inline __attribute__((always_inline)) void Block(
    std::size_t Kp, const std::uint32_t* A, std::size_t lda, const std::uint32_t* B,
    std::size_t ldb, float* C, std::size_t ldc, bool accumulate) {
  const std::size_t sa = lda * 4, sb = ldb * 4, sc = ldc * 4;
  if (accumulate) {
    _tile_loadd(0, C, sc);
    if constexpr (NN > 1) _tile_loadd(1, C + 16, sc);
    if constexpr (NM > 1) _tile_loadd(2, C + 16 * ldc, sc);
    if constexpr (NM > 1 && NN > 1) _tile_loadd(3, C + 16 * ldc + 16, sc);
  } else {
    _tile_zero(0);
    if constexpr (NN > 1) _tile_zero(1);
    if constexpr (NM > 1) _tile_zero(2);
    if constexpr (NM > 1 && NN > 1) _tile_zero(3);
  }
  for (std::size_t k = 0; k < Kp; k += 16) {
    _tile_loadd(4, A + k, sa);
    _tile_loadd(6, B + k * ldb, sb);
    if constexpr (NM > 1) _tile_loadd(5, A + 16 * lda + k, sa);
    if constexpr (NN > 1) _tile_loadd(7, B + k * ldb + 16, sb);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NN > 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (NM > 1) _tile_dpbf16ps(2, 5, 6);
    if constexpr (NM > 1 && NN > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, C, sc);
  if constexpr (NN > 1) _tile_stored(1, C + 16, sc);
  if constexpr (NM > 1) _tile_stored(2, C + 16 * ldc, sc);
  if constexpr (NM > 1 && NN > 1) _tile_stored(3, C + 16 * ldc + 16, sc);
}

FA_AMX_TARGET void GemmAmx(std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
                           std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C,
                           std::size_t ldc, bool accumulate) {
  // Loaded on every call: the configuration is per thread and other code in the
  // process (another library's AMX kernels) may change it between our calls.
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  // Column strips of B outer (a 32-column strip of K^T or V stays in L1).
  for (std::size_t n = 0; n < N; n += 32) {
    const bool two_n = n + 32 <= N;
    for (std::size_t m = 0; m < M; m += 32) {
      const bool two_m = m + 32 <= M;
      const std::uint32_t* a = A + m * lda;
      float* c = C + m * ldc + n;
      if (two_m && two_n) Block<2, 2>(Kp, a, lda, B + n, ldb, c, ldc, accumulate);
      else if (two_m) Block<2, 1>(Kp, a, lda, B + n, ldb, c, ldc, accumulate);
      else if (two_n) Block<1, 2>(Kp, a, lda, B + n, ldb, c, ldc, accumulate);
      else Block<1, 1>(Kp, a, lda, B + n, ldb, c, ldc, accumulate);
    }
  }
  _tile_release();  // so context switches need not save this thread's tiles
}

}  // namespace

void bf16_gemm_amx(std::size_t M, std::size_t N, std::size_t Kp, const std::uint32_t* A,
                   std::size_t lda, const std::uint32_t* B, std::size_t ldb, float* C,
                   std::size_t ldc, bool accumulate) {
  GemmAmx(M, N, Kp, A, lda, B, ldb, C, ldc, accumulate);
}

#else  // no AMX build: never usable, so the kernel is never reached

bool bf16_amx_usable() { return false; }
void bf16_gemm_amx(std::size_t, std::size_t, std::size_t, const std::uint32_t*, std::size_t,
                   const std::uint32_t*, std::size_t, float*, std::size_t, bool) {
  std::abort();
}

#endif

}  // namespace flashattn::detail::cpu
