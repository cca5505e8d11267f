// FlashAttention-2 forward on CPU threads (Algorithm 1): for each block of query
// rows, stream key blocks, S = Q K^T in a register-blocked SIMD GEMM, shape and
// mask the tile, update the online softmax (running max m, normalizer l) and
// O += P V. Never holds more than one Br x Bc score tile per thread.
// Compiled once per SIMD target (Highway foreach_target); the best target for
// the running CPU is picked at run time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/flash_forward.cpp"
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3  // SSE4 covers every x86-64 CPU worth tuning for
#endif
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends.hpp"
#include "cpu/bf16_dot.hpp"
#include "cpu/flash_common.hpp"
#include "cpu/flash_kernels-inl.hpp"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace flashattn::detail::cpu::HWY_NAMESPACE {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Per-thread tiles.
struct ForwardWork {
  FloatBuffer q, s, o, m, l, bias, alpha, p;  // p: the bf16 P tile of the bf16 kernels
};

// Packed K^T and V tiles of one chunk of (batch, kv head) pairs.
// bf16 kernels: the tiles hold bf16 pairs instead (see bf16_dot.hpp), in the
// same buffers; K^T has kp pair-rows (ceil(D/2) rounded up to 16 for AMX).
struct PackedKV {
  std::size_t kt_block = 0, v_block = 0;  // floats per block
  FloatBuffer kt, v;
  bool bf16 = false;
  Bf16Kernel kern = Bf16Kernel::none;
  std::size_t kp = 0;
};

void PackChunkKV(const ForwardParams& p, const PackChunk& ch, std::size_t Dp, PackedKV& kv) {
  const std::size_t D = std::size_t(p.head_dim);
  const std::int64_t pairs = ch.pair_end - ch.pair_begin;
#pragma omp parallel num_threads(thread_count(p.num_threads))
  {
    FloatBuffer tmp(16 * D);
#pragma omp for schedule(dynamic) collapse(2)
    for (std::int64_t pr = 0; pr < pairs; ++pr) {
      for (std::int64_t kb = 0; kb < (p.seqlen_k + kBlockK - 1) / kBlockK; ++kb) {
        const std::int64_t pair = ch.pair_begin + pr;
        const int b = int(pair / p.heads_kv), hk = int(pair % p.heads_kv);
        const SequenceView s = sequence(p, b);
        const std::int64_t j0 = kb * kBlockK;
        if (j0 >= s.len_k) continue;
        const std::int64_t cols = std::min(kBlockK, s.len_k - j0);
        const std::int64_t blk = ch.base(pair) + kb;
        if (kv.bf16) {
          bf16_pack_kt(p, b, s.k_row0, j0, cols, hk, std::size_t(kBlockK),
                       kv.kp, reinterpret_cast<std::uint32_t*>(kv.kt.data() + blk * kv.kt_block));
          bf16_pack_v(p, b, s.k_row0, j0, cols, hk, Dp, std::size_t(kBlockK),
                      reinterpret_cast<std::uint32_t*>(kv.v.data() + blk * kv.v_block));
          continue;
        }
        PackTransposed(p.k, p.dtype, p.k_strides, b, s.k_row0, j0, cols, hk, D, kBlockK,
                       kv.kt.data() + blk * kv.kt_block, tmp.data());
        PackRows(p.v, p.dtype, p.v_strides, b, s.k_row0, j0, cols, hk, D, Dp, kBlockK,
                 kv.v.data() + blk * kv.v_block);
      }
    }
  }
}

// Shapes one score row in place: scale (or softcap), bias, ALiBi, then the mask
// (keys outside [lo, hi) of the tile become -inf, as do padding columns).
void ShapeRow(const ForwardParams& p, float* x, std::size_t colsP, std::int64_t cols,
              const float* bias_row, float slope, std::int64_t alibi_d0, std::int64_t lo,
              std::int64_t hi) {
  if (p.softcap > 0)
    SoftcapRow(x, colsP, p.scale, p.softcap);
  else
    ScaleRow(x, colsP, p.scale);
  if (bias_row) AddRow(x, bias_row, std::size_t(cols));
  if (p.alibi) AlibiRow(x, colsP, slope, alibi_d0);
  hi = std::max(hi, lo);
  for (std::int64_t c = 0; c < lo; ++c) x[c] = kNegInf;
  for (std::int64_t c = hi; c < std::int64_t(colsP); ++c) x[c] = kNegInf;
}

// Whether scores need nothing beyond the scale (then, on unmasked tiles, the
// scale is folded into the max and the exponent).
bool PlainScores(const ForwardParams& p) { return p.softcap <= 0 && !p.bias && !p.alibi; }

void ForwardBlock(const ForwardParams& p, int b, int h, std::int64_t qb, const PackChunk& ch,
                  const PackedKV& kv, ForwardWork& w) {
  const std::size_t D = std::size_t(p.head_dim);
  const std::size_t L = hn::Lanes(DF());
  const std::size_t Dp = std::size_t(round_up(std::int64_t(D), std::int64_t(L)));
  const SequenceView s = sequence(p, b);
  const Mask mask = make_mask(p, s);
  const int hk = kv_head(p, h);
  const std::int64_t pair = std::int64_t(b) * p.heads_kv + hk;
  const std::int64_t i0 = qb * kBlockQ, i1 = std::min(i0 + kBlockQ, s.len_q);
  const std::size_t rows = std::size_t(i1 - i0);
  float* q = w.q.data();
  float* st = w.s.data();
  float* o = w.o.data();
  float* m = w.m.data();
  float* l = w.l.data();

  // bf16 kernels: Q as bf16 pairs (kv.kp per row), P rounded to bf16 before
  // P V. AMX works on 16-row tiles: rows past the block's end are zero in Q.
  const std::size_t Kp = kv.kp;
  const std::size_t rowsT =
      kv.kern == Bf16Kernel::amx ? std::size_t(round_up(std::int64_t(rows), 16)) : rows;
  auto* q2 = reinterpret_cast<std::uint32_t*>(q);
  if (kv.bf16) std::fill(q2 + rows * Kp, q2 + rowsT * Kp, 0u);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t off = operand_offset(p.q_strides, b, s.q_row0, i0 + std::int64_t(r), h);
    if (kv.bf16) {
      bf16_load_pairs(p.q, off, D, Kp, q2 + r * Kp);
      continue;
    }
    LoadRowF32(p.q, p.dtype, off, D, q + r * Dp);
    ZeroRow(q + r * Dp + D, Dp - D);
  }
  ZeroRow(o, rowsT * Dp);
  std::fill(m, m + rows, kNegInf);
  std::fill(l, l + rows, 0.0f);
  const float slope = alibi_slope(p, b, h);

  const KeyRange kr = visible_keys(mask, i0, i1);
  // Key blocks are aligned to kBlockK (the packing grid); visit only those the
  // query block can see.
  const std::int64_t kb_first = std::max<std::int64_t>(kr.lo, 0) / kBlockK;
  for (std::int64_t kb = kb_first; kb * kBlockK < kr.hi; ++kb) {
    // Clamped to the last row's end: columns past it are masked for every row.
    const std::int64_t j0 = kb * kBlockK, j1 = std::min(j0 + kBlockK, kr.hi);
    if (tile_fully_masked(mask, i0, i1, j0, j1)) continue;
    const std::int64_t cols = j1 - j0;
    const std::size_t colsP = std::size_t(round_up(cols, std::int64_t(L)));
    const std::int64_t blk = ch.base(pair) + kb;
    const float* kt = kv.kt.data() + blk * kv.kt_block;
    const float* vt = kv.v.data() + blk * kv.v_block;

    if (kv.bf16)
      bf16_gemm(kv.kern, rowsT, colsP, Kp, q2, Kp, reinterpret_cast<const std::uint32_t*>(kt),
                std::size_t(kBlockK), st, std::size_t(kBlockK), false);
    else
      Gemm(rows, colsP, D, q, std::ptrdiff_t(Dp), 1, kt, std::size_t(kBlockK), st,
           std::size_t(kBlockK), false);

    const bool full = tile_fully_visible(mask, i0, i1, j0, j1);
    // Folding needs a positive scale (so that max commutes with it) and a tile
    // with nothing to mask or add.
    const bool fold = PlainScores(p) && p.scale > 0 && full && std::size_t(cols) == colsP;
    if (fold) {
      // Plain scores: the scale goes into the max and the exponent. By groups
      // of L rows (hot in L1): their new maxima, then their rescale factors
      // exp(m_old - m_new) in one vector exp instead of a libm call per row
      // (m_new is finite here; m_old = -inf gives 0), then the exponentials.
      float* alpha = w.alpha.data();
      for (std::size_t r0 = 0; r0 < rows; r0 += L) {
        const std::size_t r1 = std::min(rows, r0 + L);
        std::fill(alpha, alpha + L, 0.0f);
        for (std::size_t r = r0; r < r1; ++r) {
          const float m_new = std::max(m[r], MaxRow(st + r * std::size_t(kBlockK), colsP) * p.scale);
          alpha[r - r0] = m[r] - m_new;
          m[r] = m_new;
        }
        ExpInPlace(alpha, L);
        for (std::size_t r = r0; r < r1; ++r) {
          const float a = alpha[r - r0];
          l[r] = l[r] * a + ExpScaledRow(st + r * std::size_t(kBlockK), colsP, p.scale, m[r]);
          if (a != 1.0f) ScaleRow(o + r * Dp, Dp, a);
        }
      }
    }
    for (std::size_t r = 0; r < rows && !fold; ++r) {
      const std::int64_t i = i0 + std::int64_t(r);
      float* x = st + r * std::size_t(kBlockK);
      const float* bias_row = nullptr;
      if (p.bias) {
        LoadRowF32(p.bias, p.bias_dtype, bias_offset(p, b, h, i, j0), std::size_t(cols), w.bias.data());
        bias_row = w.bias.data();
      }
      const std::int64_t lo = full ? 0 : std::clamp(mask.key_begin(i) - j0, std::int64_t(0), cols);
      const std::int64_t hi = full ? cols : std::clamp(mask.key_end(i) - j0, std::int64_t(0), cols);
      ShapeRow(p, x, colsP, cols, bias_row, slope, i + mask.diag - j0, lo, hi);
      const float m_new = std::max(m[r], MaxRow(x, colsP));
      if (m_new == kNegInf) {  // nothing visible yet: this row contributes nothing
        ZeroRow(x, colsP);
        continue;
      }
      const float alpha = std::exp(m[r] - m_new);  // 0 when m was -inf
      const float sum = ExpRow(x, colsP, m_new);
      l[r] = l[r] * alpha + sum;
      m[r] = m_new;
      if (alpha != 1.0f) ScaleRow(o + r * Dp, Dp, alpha);
    }
    if (kv.bf16) {
      // Columns past cols are 0 in P (masked or padding; zero-filled up to a
      // whole AMX tile of 32 keys) and keys past the block's end are 0 in V.
      // The padding rows of an AMX block have S = 0 (zero Q) and round harmlessly.
      auto* pt = reinterpret_cast<std::uint16_t*>(w.p.data());
      const std::size_t colsR = std::size_t(round_up(cols, 32));
      bf16_round_rows(rowsT, colsP, colsR, st, std::size_t(kBlockK), pt, std::size_t(kBlockK));
      bf16_gemm(kv.kern, rowsT, Dp, colsR / 2, reinterpret_cast<const std::uint32_t*>(pt),
                std::size_t(kBlockK) / 2, reinterpret_cast<const std::uint32_t*>(vt), Dp, o, Dp,
                true);
    } else {
      Gemm(rows, Dp, std::size_t(cols), st, kBlockK, 1, vt, Dp, o, Dp, true);
    }
  }

  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + std::int64_t(r);
    float* orow = o + r * Dp;
    float lse = kNegInf;
    if (l[r] > 0.0f) {
      ScaleRow(orow, Dp, 1.0f / l[r]);
      lse = m[r] + std::log(l[r]);
    } else {
      ZeroRow(orow, Dp);
    }
    p.lse[lse_offset(p, b, s.q_row0, i, h)] = lse;
    const std::int64_t off = operand_offset(p.out_strides, b, s.q_row0, i, h);
    if (kv.bf16)  // the vector rounding (same round-to-nearest-even)
      bf16_store_row(static_cast<std::uint16_t*>(p.out) + off, orow, D);
    else
      store_row(p.out, p.dtype, off, orow, std::int64_t(D));
  }
}

struct Task {
  int b, h;
  std::int64_t qb, cost;
};

}  // namespace

void ForwardImpl(const ForwardParams& p) {
  const std::size_t D = std::size_t(p.head_dim);
  const std::size_t L = hn::Lanes(DF());
  const std::size_t Dp = std::size_t(round_up(std::int64_t(D), std::int64_t(L)));
  // Reused across calls (see kKeepPackFloats). The parallel regions below must
  // see the calling thread's instance, hence the plain reference.
  thread_local PackedKV kv_cache;
  PackedKV& kv = kv_cache;
  // bf16 products (AMX tiles) when the CPU has them; their tiles are laid out
  // for 16-float vectors, so only on the AVX-512 targets (compare --target avx2
  // thus also exercises the fp32 path for bf16).
  kv.kern = p.dtype == DType::bf16 && L == 16 && kBlockK % 32 == 0 && kBlockQ % 16 == 0
                ? bf16_kernel()
                : Bf16Kernel::none;
  kv.bf16 = kv.kern != Bf16Kernel::none;
  kv.kp = std::size_t(round_up((std::int64_t(D) + 1) / 2, 16));
  kv.kt_block = (kv.bf16 ? std::max(D, kv.kp) : D) * std::size_t(kBlockK);
  kv.v_block = std::size_t(kBlockK) * Dp;
  const std::int64_t block_bytes = std::int64_t(kv.kt_block + kv.v_block) * 4;
  const int group = p.heads_q / p.heads_kv;

  for (const PackChunk& ch : plan_chunks(p, std::max<std::int64_t>(1, kPackBudgetBytes / block_bytes))) {
    kv.kt.resize(std::size_t(ch.blocks()) * kv.kt_block + 1);
    kv.v.resize(std::size_t(ch.blocks()) * kv.v_block + 1);
    PackChunkKV(p, ch, Dp, kv);

    // Tasks: (b, q head, query block) of this chunk, head by head so that the
    // threads share that head's K/V tiles in cache, and within a head the
    // costliest (causal: last) query blocks first so the cheap ones even out
    // the end of the dynamic schedule.
    std::vector<Task> tasks;
    for (std::int64_t pair = ch.pair_begin; pair < ch.pair_end; ++pair) {
      const int b = int(pair / p.heads_kv), hk = int(pair % p.heads_kv);
      const SequenceView s = sequence(p, b);
      const Mask mask = make_mask(p, s);
      for (int h = hk * group; h < (hk + 1) * group; ++h) {
        const std::size_t first = tasks.size();
        for (std::int64_t qb = 0; qb * kBlockQ < s.len_q; ++qb) {
          const KeyRange kr = visible_keys(mask, qb * kBlockQ, std::min(s.len_q, (qb + 1) * kBlockQ));
          tasks.push_back({b, h, qb, std::max<std::int64_t>(kr.hi - kr.lo, 0)});
        }
        std::stable_sort(tasks.begin() + std::ptrdiff_t(first), tasks.end(),
                         [](const Task& a, const Task& c) { return a.cost > c.cost; });
      }
    }

#pragma omp parallel num_threads(thread_count(p.num_threads))
    {
      ForwardWork w;
      w.q.resize(std::size_t(kBlockQ) * Dp);
      w.o.resize(std::size_t(kBlockQ) * Dp);
      w.s.resize(std::size_t(kBlockQ * kBlockK));
      w.m.resize(std::size_t(kBlockQ));
      w.l.resize(std::size_t(kBlockQ));
      w.alpha.resize(hn::Lanes(DF()));
      w.bias.resize(std::size_t(kBlockK));
      if (kv.bf16) w.p.resize(std::size_t(kBlockQ * kBlockK) / 2);
#pragma omp for schedule(dynamic, 1)
      for (std::size_t t = 0; t < tasks.size(); ++t)
        ForwardBlock(p, tasks[t].b, tasks[t].h, tasks[t].qb, ch, kv, w);
    }
  }
  if (kv.kt.size() + kv.v.size() > kKeepPackFloats) {
    kv.kt.release();
    kv.v.release();
  }
}

}  // namespace flashattn::detail::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flashattn::detail::cpu {
HWY_EXPORT(ForwardImpl);
void flash_forward(const ForwardParams& p) { HWY_DYNAMIC_DISPATCH(ForwardImpl)(p); }
}  // namespace flashattn::detail::cpu
#endif
