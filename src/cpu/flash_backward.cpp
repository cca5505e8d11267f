// FlashAttention-2 backward on CPU threads. P is recomputed tile by tile from
// the saved logsumexp; D = rowsum(dO * O) is computed once per row up front.
// For each (query tile, key block):
//   S = Q K^T, shaped and masked as in the forward; P = exp(S - lse)
//   dP = dO V^T;  dS = P * (dP - D)   (dbias takes this dS)
//   dS *= softcap'(capped score) * scale
//   dV += P^T dO;  dK += dS^T Q;  dQ += dS K
// Work is split so that every output element has one owner and one fixed
// summation order (bitwise reproducible, no atomics):
//   fused    tasks (batch, kv head, split of its keys): own their dK/dV and a
//            partial dQ of the pair's query heads; partials are summed in split
//            order. Used when the expected makespan is shorter than two-pass's.
//   two-pass tasks (batch, kv head, key block) own dK/dV; then tasks (dbias slot
//            or (batch, head), query block) own dQ (and dbias rows), recomputing
//            S, P and dP. Always used when dbias is requested.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "cpu/flash_backward.cpp"
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS HWY_SSSE3
#endif
#include "hwy/foreach_target.h"  // IWYU pragma: keep

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends.hpp"
#include "cpu/flash_common.hpp"
#include "cpu/flash_kernels-inl.hpp"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace flashattn::detail::cpu::HWY_NAMESPACE {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Packed K^T, K and V^T tiles of one chunk of (batch, kv head) pairs.
struct PackedBwd {
  std::size_t kt_block = 0, k_block = 0;  // floats per block (V^T blocks are like K^T)
  FloatBuffer kt, k, vt, dq_part;  // dq_part: the fused mode's partial dQs
};

// Per-thread tiles.
struct BwdWork {
  FloatBuffer q, dout, s, ds, cap, lse, dvec, bias, dq, dk, dv, dbias;
};

struct Shape {
  std::size_t D, Dp, L;
};

// The per-thread tiles every task of either schedule needs (callers add their own).
void size_tiles(BwdWork& w, const Shape& sh) {
  w.q.resize(std::size_t(kBlockQ) * sh.Dp);
  w.dout.resize(std::size_t(kBlockQ) * sh.Dp);
  w.s.resize(std::size_t(kBlockQ * kBlockK));
  w.ds.resize(std::size_t(kBlockQ * kBlockK));
  w.cap.resize(std::size_t(kBlockK));
  w.bias.resize(std::size_t(kBlockK));
  w.lse.resize(std::size_t(kBlockQ));
  w.dvec.resize(std::size_t(kBlockQ));
}

Shape shape_of(const ForwardParams& p) {
  const std::size_t L = hn::Lanes(DF());
  return {std::size_t(p.head_dim), std::size_t(round_up(p.head_dim, std::int64_t(L))), L};
}

// Index of row i of sequence b in the per-row D vector (heads_q x total_q).
std::int64_t row_index(const ForwardParams& p, int b, const SequenceView& s, std::int64_t i) {
  return p.cu_seqlens_q ? s.q_row0 + i : std::int64_t(b) * p.seqlen_q + i;
}

void PackChunkBwd(const BackwardParams& p, const PackChunk& ch, const Shape& sh, PackedBwd& pk) {
  const std::int64_t pairs = ch.pair_end - ch.pair_begin;
#pragma omp parallel num_threads(thread_count(p.num_threads))
  {
    FloatBuffer tmp(16 * sh.D);
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
        PackTransposed(p.k, p.dtype, p.k_strides, b, s.k_row0, j0, cols, hk, sh.D, kBlockK,
                       pk.kt.data() + blk * pk.kt_block, tmp.data());
        PackTransposed(p.v, p.dtype, p.v_strides, b, s.k_row0, j0, cols, hk, sh.D, kBlockK,
                       pk.vt.data() + blk * pk.kt_block, tmp.data());
        PackRows(p.k, p.dtype, p.k_strides, b, s.k_row0, j0, cols, hk, sh.D, sh.Dp, kBlockK,
                 pk.k.data() + blk * pk.k_block);
      }
    }
  }
}

// D[h][row] = sum_d dO * O, for every query row (fp32).
void ComputeD(const BackwardParams& p, float* dvec) {
  const std::size_t D = std::size_t(p.head_dim);
#pragma omp parallel num_threads(thread_count(p.num_threads))
  {
    FloatBuffer a(D), c(D);
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < p.batch; ++b)
      for (int h = 0; h < p.heads_q; ++h) {
        const SequenceView s = sequence(p, b);
        for (std::int64_t i = 0; i < s.len_q; ++i) {
          LoadRowF32(p.dout, p.dtype, operand_offset(p.dout_strides, b, s.q_row0, i, h), D, a.data());
          LoadRowF32(p.out, p.dtype, operand_offset(p.out_strides, b, s.q_row0, i, h), D, c.data());
          dvec[std::int64_t(h) * p.total_q + row_index(p, b, s, i)] = DotRow(a.data(), c.data(), D);
        }
      }
  }
}

// Q and dO rows [i0, i0 + rows) of head h, with their lse and D.
void LoadQueryTile(const BackwardParams& p, int b, int h, const SequenceView& s, std::int64_t i0,
                   std::size_t rows, const Shape& sh, const float* dvec, BwdWork& w) {
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + std::int64_t(r);
    LoadRowF32(p.q, p.dtype, operand_offset(p.q_strides, b, s.q_row0, i, h), sh.D, w.q.data() + r * sh.Dp);
    ZeroRow(w.q.data() + r * sh.Dp + sh.D, sh.Dp - sh.D);
    LoadRowF32(p.dout, p.dtype, operand_offset(p.dout_strides, b, s.q_row0, i, h), sh.D,
               w.dout.data() + r * sh.Dp);
    ZeroRow(w.dout.data() + r * sh.Dp + sh.D, sh.Dp - sh.D);
    w.lse.data()[r] = p.lse[lse_offset(p, b, s.q_row0, i, h)];
    w.dvec.data()[r] = dvec[std::int64_t(h) * p.total_q + row_index(p, b, s, i)];
  }
}

// P (in w.s) and the scaled, cap-corrected dS (in w.ds) of one tile. When
// dbias_rows is given, the pre-cap dS is added to it (row stride ld_dbias).
void TileGrad(const BackwardParams& p, int b, int h, const Mask& mask, std::int64_t i0,
              std::size_t rows, std::int64_t j0, std::int64_t cols, const float* kt, const float* vt,
              const Shape& sh, BwdWork& w, float* dbias_rows, std::int64_t ld_dbias) {
  const std::size_t colsP = std::size_t(round_up(cols, std::int64_t(sh.L)));
  const std::size_t ld = std::size_t(kBlockK);
  float* st = w.s.data();
  float* ds = w.ds.data();
  Gemm(rows, colsP, sh.D, w.q.data(), std::ptrdiff_t(sh.Dp), 1, kt, ld, st, ld, false);
  Gemm(rows, colsP, sh.D, w.dout.data(), std::ptrdiff_t(sh.Dp), 1, vt, ld, ds, ld, false);

  const bool full = tile_fully_visible(mask, i0, i0 + std::int64_t(rows), j0, j0 + cols);
  const float slope = alibi_slope(p, b, h);
  const DF df;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t i = i0 + std::int64_t(r);
    float* x = st + r * ld;
    float* g = ds + r * ld;
    float* cap = w.cap.data();
    const float lse = w.lse.data()[r];
    if (lse == kNegInf) {  // no visible key (or all scores -inf): no gradient
      ZeroRow(x, colsP);
      ZeroRow(g, colsP);
      continue;
    }
    const bool fold = full && !p.bias && !p.alibi && p.softcap <= 0 && std::size_t(cols) == colsP;
    if (p.softcap > 0) {
      SoftcapRow(x, colsP, p.scale, p.softcap);
      std::copy(x, x + colsP, cap);
    } else if (!fold) {
      ScaleRow(x, colsP, p.scale);
    }
    if (p.bias) {
      LoadRowF32(p.bias, p.bias_dtype, bias_offset(p, b, h, i, j0), std::size_t(cols), w.bias.data());
      AddRow(x, w.bias.data(), std::size_t(cols));
    }
    if (p.alibi) AlibiRow(x, colsP, slope, i + mask.diag - j0);
    std::int64_t lo = 0, hi = cols;
    if (!full) {
      lo = std::clamp(mask.key_begin(i) - j0, std::int64_t(0), cols);
      hi = std::max(lo, std::clamp(mask.key_end(i) - j0, std::int64_t(0), cols));
    }
    for (std::int64_t c = 0; c < lo; ++c) x[c] = kNegInf;
    for (std::int64_t c = hi; c < std::int64_t(colsP); ++c) x[c] = kNegInf;
    if (fold)  // plain scores: the scale goes into the exponent
      ExpScaledRow(x, colsP, p.scale, lse);
    else
      ExpRow(x, colsP, lse);

    // dS = P * (dP - D); then the bias gradient; then the cap derivative and scale.
    const VF vd = hn::Set(df, w.dvec.data()[r]);
    if (!dbias_rows && p.softcap <= 0) {  // the common case in one pass
      const VF sc = hn::Set(df, p.scale);
      for (std::size_t c = 0; c < colsP; c += sh.L)
        hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + c), sc), hn::Sub(hn::LoadU(df, g + c), vd)), df, g + c);
      continue;
    }
    for (std::size_t c = 0; c < colsP; c += sh.L)
      hn::StoreU(hn::Mul(hn::LoadU(df, x + c), hn::Sub(hn::LoadU(df, g + c), vd)), df, g + c);
    if (dbias_rows) AddRow(dbias_rows + std::int64_t(r) * ld_dbias, g, std::size_t(cols));
    if (p.softcap > 0) {
      const VF inv = hn::Set(df, 1.0f / p.softcap), one = hn::Set(df, 1.0f), sc = hn::Set(df, p.scale);
      for (std::size_t c = 0; c < colsP; c += sh.L) {
        const VF t = hn::Mul(hn::LoadU(df, cap + c), inv);
        const VF deriv = hn::NegMulAdd(t, t, one);
        hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, g + c), deriv), sc), df, g + c);
      }
    } else {
      ScaleRow(g, colsP, p.scale);
    }
  }
}

// Stores rows [0, n) of a (n x Dp) fp32 tile into operand rows row0.. of head h.
void StoreTile(void* base, DType t, const OperandStrides& st, int b, std::int64_t seq_row0,
               std::int64_t r0, std::int64_t n, int h, const float* tile, const Shape& sh) {
  for (std::int64_t r = 0; r < n; ++r)
    store_row(base, t, operand_offset(st, b, seq_row0, r0 + r, h), tile + std::size_t(r) * sh.Dp,
              std::int64_t(sh.D));
}

// dK and dV of key blocks [kb0, kb0 + nkb) of pair (b, hk), summed over the
// query heads of the group; with dq_all (fused mode) also accumulates those
// heads' dQ. Each query tile is loaded once for all nkb key blocks: Q, dO and
// dQ then stream through the cache nkb times less often.
void KeyBlockGrads(const BackwardParams& p, int b, int hk, std::int64_t kb0, std::int64_t nkb,
                   const PackChunk& ch, const PackedBwd& pk, const Shape& sh, const float* dvec, BwdWork& w,
                   float* dq_all) {
  const SequenceView s = sequence(p, b);
  const Mask mask = make_mask(p, s);
  const int group = p.heads_q / p.heads_kv;
  nkb = std::min(nkb, (s.len_k + kBlockK - 1) / kBlockK - kb0);
  const std::int64_t j_begin = kb0 * kBlockK, j_end = std::min(s.len_k, (kb0 + nkb) * kBlockK);
  const std::int64_t blk0 = ch.base(std::int64_t(b) * p.heads_kv + hk) + kb0;
  const std::size_t ld = std::size_t(kBlockK);
  const std::size_t tile = ld * sh.Dp;  // floats of one block's dK (or dV)
  ZeroRow(w.dk.data(), std::size_t(j_end - j_begin) * sh.Dp);
  ZeroRow(w.dv.data(), std::size_t(j_end - j_begin) * sh.Dp);
  for (int hh = 0; hh < group; ++hh) {
    const int h = hk * group + hh;
    for (std::int64_t i0 = 0; i0 < s.len_q; i0 += kBlockQ) {
      const std::int64_t i1 = std::min(i0 + kBlockQ, s.len_q);
      if (tile_fully_masked(mask, i0, i1, j_begin, j_end)) continue;
      const std::size_t rows = std::size_t(i1 - i0);
      LoadQueryTile(p, b, h, s, i0, rows, sh, dvec, w);
      for (std::int64_t k = 0; k < nkb; ++k) {
        const std::int64_t j0 = (kb0 + k) * kBlockK;
        // Columns past the last row's end are masked for every row of the tile.
        const std::int64_t cols = std::min({kBlockK, s.len_k - j0, mask.key_end(i1 - 1) - j0});
        if (cols <= 0 || tile_fully_masked(mask, i0, i1, j0, j0 + cols)) continue;
        const std::int64_t blk = blk0 + k;
        TileGrad(p, b, h, mask, i0, rows, j0, cols, pk.kt.data() + blk * pk.kt_block,
                 pk.vt.data() + blk * pk.kt_block, sh, w, nullptr, 0);
        Gemm(std::size_t(cols), sh.Dp, rows, w.s.data(), 1, std::ptrdiff_t(ld), w.dout.data(), sh.Dp,
             w.dv.data() + std::size_t(k) * tile, sh.Dp, true);
        Gemm(std::size_t(cols), sh.Dp, rows, w.ds.data(), 1, std::ptrdiff_t(ld), w.q.data(), sh.Dp,
             w.dk.data() + std::size_t(k) * tile, sh.Dp, true);
        if (dq_all)
          Gemm(rows, sh.Dp, std::size_t(cols), w.ds.data(), std::ptrdiff_t(ld), 1, pk.k.data() + blk * pk.k_block,
               sh.Dp, dq_all + (std::size_t(hh) * std::size_t(s.len_q) + std::size_t(i0)) * sh.Dp, sh.Dp, true);
      }
    }
  }
  StoreTile(p.dk, p.dtype, p.dk_strides, b, s.k_row0, j_begin, j_end - j_begin, hk, w.dk.data(), sh);
  StoreTile(p.dv, p.dtype, p.dv_strides, b, s.k_row0, j_begin, j_end - j_begin, hk, w.dv.data(), sh);
}

// Key blocks handled together in the fused mode (dK/dV of 512 keys: 512 KiB at D=128).
constexpr std::int64_t kFusedKeyBlocks = 4;

// Fused mode: dK/dV of the key super-blocks [sb0, sb1) of pair (b, hk), and
// those blocks' contribution to the dQ of the pair's query heads, accumulated
// into dq_part (group x len_q x Dp, zeroed here). Splitting a pair's keys over
// several tasks keeps threads busy when pairs are few; the partial dQs are then
// summed in split order (ReduceDq), so the result does not depend on scheduling.
void PairGrads(const BackwardParams& p, int b, int hk, std::int64_t sb0, std::int64_t sb1,
               const PackChunk& ch, const PackedBwd& pk, const Shape& sh, const float* dvec, BwdWork& w,
               float* dq_part) {
  const SequenceView s = sequence(p, b);
  const int group = p.heads_q / p.heads_kv;
  ZeroRow(dq_part, std::size_t(group) * std::size_t(s.len_q) * sh.Dp);
  for (std::int64_t sb = sb0; sb < sb1; ++sb)
    KeyBlockGrads(p, b, hk, sb * kFusedKeyBlocks, kFusedKeyBlocks, ch, pk, sh, dvec, w, dq_part);
}

std::int64_t super_blocks(const SequenceView& s) {
  const std::int64_t nkb = (s.len_k + kBlockK - 1) / kBlockK;
  return (nkb + kFusedKeyBlocks - 1) / kFusedKeyBlocks;
}

// Pass 2: dQ rows [qb*Br, ...) of every member (b, h) of a slot, and, with
// dbias, those rows of the slot's bias gradient (members in a fixed order).
struct Member {
  int b, h;
};

void QueryBlockGrads(const BackwardParams& p, const std::vector<Member>& members, int slot_b, int slot_h,
                     std::int64_t qb, const PackChunk& ch, const PackedBwd& pk, const Shape& sh,
                     const float* dvec, BwdWork& w) {
  const std::int64_t i0 = qb * kBlockQ;
  float* dbias = nullptr;
  std::int64_t dbias_rows = 0;
  if (p.dbias) {
    dbias_rows = std::min(kBlockQ, p.seqlen_q - i0);
    ZeroRow(w.dbias.data(), std::size_t(dbias_rows * p.seqlen_k));
    dbias = w.dbias.data();
  }
  for (const Member& mb : members) {
    const SequenceView s = sequence(p, mb.b);
    if (i0 >= s.len_q) continue;
    const Mask mask = make_mask(p, s);
    const std::int64_t i1 = std::min(i0 + kBlockQ, s.len_q);
    const std::size_t rows = std::size_t(i1 - i0);
    const int hk = kv_head(p, mb.h);
    const std::int64_t pair = std::int64_t(mb.b) * p.heads_kv + hk;
    LoadQueryTile(p, mb.b, mb.h, s, i0, rows, sh, dvec, w);
    ZeroRow(w.dq.data(), rows * sh.Dp);
    const KeyRange kr = visible_keys(mask, i0, i1);
    for (std::int64_t kb = std::max<std::int64_t>(kr.lo, 0) / kBlockK; kb * kBlockK < kr.hi; ++kb) {
      const std::int64_t j0 = kb * kBlockK, cols = std::min(kBlockK, kr.hi - j0);
      if (tile_fully_masked(mask, i0, i1, j0, j0 + cols)) continue;
      const std::int64_t blk = ch.base(pair) + kb;
      TileGrad(p, mb.b, mb.h, mask, i0, rows, j0, cols, pk.kt.data() + blk * pk.kt_block,
               pk.vt.data() + blk * pk.kt_block, sh, w, dbias ? dbias + j0 : nullptr, p.seqlen_k);
      Gemm(rows, sh.Dp, std::size_t(cols), w.ds.data(), kBlockK, 1, pk.k.data() + blk * pk.k_block, sh.Dp,
           w.dq.data(), sh.Dp, true);
    }
    StoreTile(p.dq, p.dtype, p.dq_strides, mb.b, s.q_row0, i0, std::int64_t(rows), mb.h, w.dq.data(), sh);
  }
  if (dbias)
    for (std::int64_t r = 0; r < dbias_rows; ++r)
      store_row(p.dbias, p.bias_dtype,
                std::int64_t(slot_b) * p.dbias_batch + std::int64_t(slot_h) * p.dbias_head + (i0 + r) * p.dbias_row,
                dbias + r * p.seqlen_k, p.seqlen_k);
}

struct Task {
  std::int64_t a, c, cost;  // meaning depends on the pass
};

void SortByCost(std::vector<Task>& t) {
  std::stable_sort(t.begin(), t.end(), [](const Task& x, const Task& y) { return x.cost > y.cost; });
}

}  // namespace

void BackwardImpl(const BackwardParams& p) {
  const Shape sh = shape_of(p);
  const int nthreads = thread_count(p.num_threads);
  const int group = p.heads_q / p.heads_kv;
  std::vector<float> dvec(std::size_t(p.heads_q) * std::size_t(p.total_q) + 1);
  ComputeD(p, dvec.data());

  std::int64_t max_len_q = 0;
  for (int b = 0; b < p.batch; ++b) max_len_q = std::max(max_len_q, sequence(p, b).len_q);
  const std::int64_t pairs = std::int64_t(p.batch) * p.heads_kv;
  std::int64_t max_super = 1;
  for (int b = 0; b < p.batch; ++b) max_super = std::max(max_super, super_blocks(sequence(p, b)));
  // Fused costs 5 tile products per (query tile, key block) and parallelizes over
  // pairs times splits of their keys (each split holds a partial dQ); two-pass
  // costs 7 (S and dP are computed twice) and parallelizes finely. Splits: enough
  // for two tasks per thread. Pick the shorter expected makespan, with pairs of
  // equal cost, as long as the partial dQs fit in 1 GiB.
  const std::int64_t splits =
      std::clamp<std::int64_t>((2 * std::int64_t(nthreads) + pairs - 1) / std::max<std::int64_t>(pairs, 1), 1, max_super);
  const double fused_span = 5.0 / double(splits) * double((pairs * splits + nthreads - 1) / nthreads);
  const double two_pass_span = 7.0 * double(pairs) / double(nthreads);
  const double dq_bytes = double(splits) * double(group) * double(p.total_q) * double(sh.Dp) * 4.0;
  const bool fused = p.dbias == nullptr && fused_span <= two_pass_span && dq_bytes <= double(1 << 30);

  thread_local PackedBwd pk_cache;  // reused across calls; a reference for the parallel regions
  PackedBwd& pk = pk_cache;
  pk.kt_block = sh.D * std::size_t(kBlockK);
  pk.k_block = std::size_t(kBlockK) * sh.Dp;
  const std::int64_t block_bytes = std::int64_t(2 * pk.kt_block + pk.k_block) * 4;
  // dbias slots span every batch/head, so with dbias everything is packed at once.
  const std::int64_t budget =
      p.dbias ? std::numeric_limits<std::int64_t>::max() : std::max<std::int64_t>(1, kPackBudgetBytes / block_bytes);

  for (const PackChunk& ch : plan_chunks(p, budget)) {
    pk.kt.resize(std::size_t(ch.blocks()) * pk.kt_block + 1);
    pk.vt.resize(std::size_t(ch.blocks()) * pk.kt_block + 1);
    pk.k.resize(std::size_t(ch.blocks()) * pk.k_block + 1);
    PackChunkBwd(p, ch, sh, pk);

    // Fused: each pair's partial dQs, split after split, at dq_base[pair].
    std::vector<std::size_t> dq_base;
    if (fused) {
      std::size_t total = 0;
      for (std::int64_t pair = ch.pair_begin; pair < ch.pair_end; ++pair) {
        dq_base.push_back(total);
        total += std::size_t(splits * group * sequence(p, int(pair / p.heads_kv)).len_q) * sh.Dp;
      }
      pk.dq_part.resize(total + 1);
    }
    auto dq_part = [&](std::int64_t pair, std::int64_t split) {
      const std::size_t len_q = std::size_t(sequence(p, int(pair / p.heads_kv)).len_q);
      return pk.dq_part.data() + dq_base[std::size_t(pair - ch.pair_begin)] +
             std::size_t(split) * std::size_t(group) * len_q * sh.Dp;
    };

    // Pass 1 (or the fused pass): tasks over (pair, split) or (pair, key block).
    std::vector<Task> tasks;
    for (std::int64_t pair = ch.pair_begin; pair < ch.pair_end; ++pair) {
      const int b = int(pair / p.heads_kv);
      const SequenceView s = sequence(p, b);
      if (fused) {
        for (std::int64_t sp = 0; sp < splits; ++sp) tasks.push_back({pair, sp, s.len_q * s.len_k / splits});
        continue;
      }
      const Mask mask = make_mask(p, s);
      for (std::int64_t kb = 0; kb * kBlockK < s.len_k; ++kb) {
        // Cost: the query rows that can see this key block.
        const std::int64_t j0 = kb * kBlockK, j1 = std::min(s.len_k, j0 + kBlockK);
        std::int64_t rows = 0;
        for (std::int64_t i0 = 0; i0 < s.len_q; i0 += kBlockQ)
          if (!tile_fully_masked(mask, i0, std::min(i0 + kBlockQ, s.len_q), j0, j1))
            rows += std::min(kBlockQ, s.len_q - i0);
        tasks.push_back({pair, kb, rows});
      }
    }
    SortByCost(tasks);
#pragma omp parallel num_threads(nthreads)
    {
      BwdWork w;
      size_tiles(w, sh);
      w.dk.resize(std::size_t(kFusedKeyBlocks * kBlockK) * sh.Dp);
      w.dv.resize(std::size_t(kFusedKeyBlocks * kBlockK) * sh.Dp);
      w.dq.resize(std::size_t(kBlockQ) * sh.Dp);
      if (p.dbias) w.dbias.resize(std::size_t(kBlockQ * std::max<std::int64_t>(p.seqlen_k, 1)));
#pragma omp for schedule(dynamic, 1)
      for (std::size_t t = 0; t < tasks.size(); ++t) {
        const int b = int(tasks[t].a / p.heads_kv), hk = int(tasks[t].a % p.heads_kv);
        if (fused) {
          const std::int64_t nsb = super_blocks(sequence(p, b)), sp = tasks[t].c;
          PairGrads(p, b, hk, nsb * sp / splits, nsb * (sp + 1) / splits, ch, pk, sh, dvec.data(), w,
                    dq_part(tasks[t].a, sp));
        } else {
          KeyBlockGrads(p, b, hk, tasks[t].c, 1, ch, pk, sh, dvec.data(), w, nullptr);
        }
      }
    }
    if (fused) {
      // dQ = the partial dQs summed in split order, per (pair, query head, row block).
      struct RowBlock {
        std::int64_t pair;
        int hh;
        std::int64_t i0;
      };
      std::vector<RowBlock> rows;
      for (std::int64_t pair = ch.pair_begin; pair < ch.pair_end; ++pair)
        for (int hh = 0; hh < group; ++hh)
          for (std::int64_t i0 = 0; i0 < sequence(p, int(pair / p.heads_kv)).len_q; i0 += kBlockQ)
            rows.push_back({pair, hh, i0});
#pragma omp parallel num_threads(nthreads)
      {
        FloatBuffer acc(std::size_t(kBlockQ) * sh.Dp);
#pragma omp for schedule(dynamic, 4)
        for (std::size_t t = 0; t < rows.size(); ++t) {
          const std::int64_t pair = rows[t].pair, i0 = rows[t].i0;
          const int b = int(pair / p.heads_kv), hk = int(pair % p.heads_kv), hh = rows[t].hh;
          const SequenceView s = sequence(p, b);
          const std::int64_t n = std::min(kBlockQ, s.len_q - i0);
          const std::size_t off = (std::size_t(hh) * std::size_t(s.len_q) + std::size_t(i0)) * sh.Dp;
          const std::size_t count = std::size_t(n) * sh.Dp;
          std::copy(dq_part(pair, 0) + off, dq_part(pair, 0) + off + count, acc.data());
          for (std::int64_t sp = 1; sp < splits; ++sp) AddRow(acc.data(), dq_part(pair, sp) + off, count);
          StoreTile(p.dq, p.dtype, p.dq_strides, b, s.q_row0, i0, n, hk * group + hh, acc.data(), sh);
        }
      }
      continue;
    }

    // Pass 2: dQ (and dbias). Slots: one per dbias slot, or one per (b, h) of the chunk.
    std::vector<std::vector<Member>> slots;
    std::vector<std::pair<int, int>> slot_ids;
    if (p.dbias) {
      for (int bb = 0; bb < p.dbias_batch_size; ++bb)
        for (int bh = 0; bh < p.dbias_heads_size; ++bh) {
          std::vector<Member> m;
          for (int b = 0; b < p.batch; ++b)
            for (int h = 0; h < p.heads_q; ++h)
              if ((p.dbias_batch_size == 1 || b == bb) && (p.dbias_heads_size == 1 || h == bh)) m.push_back({b, h});
          slots.push_back(std::move(m));
          slot_ids.push_back({bb, bh});
        }
    } else {
      for (std::int64_t pair = ch.pair_begin; pair < ch.pair_end; ++pair) {
        const int b = int(pair / p.heads_kv), hk = int(pair % p.heads_kv);
        for (int h = hk * group; h < (hk + 1) * group; ++h) {
          slots.push_back({{b, h}});
          slot_ids.push_back({0, 0});
        }
      }
    }
    tasks.clear();
    for (std::size_t sl = 0; sl < slots.size(); ++sl) {
      std::int64_t len = p.dbias ? p.seqlen_q : 0;
      for (const Member& m : slots[sl]) len = std::max(len, sequence(p, m.b).len_q);
      for (std::int64_t qb = 0; qb * kBlockQ < len; ++qb) {
        std::int64_t cost = 0;
        for (const Member& m : slots[sl]) {
          const SequenceView s = sequence(p, m.b);
          if (qb * kBlockQ >= s.len_q) continue;
          const KeyRange kr = visible_keys(make_mask(p, s), qb * kBlockQ, std::min(s.len_q, (qb + 1) * kBlockQ));
          cost += std::max<std::int64_t>(kr.hi - kr.lo, 0);
        }
        tasks.push_back({std::int64_t(sl), qb, cost});
      }
    }
    SortByCost(tasks);
#pragma omp parallel num_threads(nthreads)
    {
      BwdWork w;
      size_tiles(w, sh);
      w.dq.resize(std::size_t(kBlockQ) * sh.Dp);
      if (p.dbias) w.dbias.resize(std::size_t(kBlockQ * std::max<std::int64_t>(p.seqlen_k, 1)));
#pragma omp for schedule(dynamic, 1)
      for (std::size_t t = 0; t < tasks.size(); ++t) {
        const std::size_t sl = std::size_t(tasks[t].a);
        QueryBlockGrads(p, slots[sl], slot_ids[sl].first, slot_ids[sl].second, tasks[t].c, ch, pk, sh,
                        dvec.data(), w);
      }
    }
  }
  if (pk.kt.size() + pk.vt.size() + pk.k.size() + pk.dq_part.size() > kKeepPackFloats) {
    pk.kt.release();
    pk.vt.release();
    pk.k.release();
    pk.dq_part.release();
  }
}

}  // namespace flashattn::detail::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace flashattn::detail::cpu {
HWY_EXPORT(BackwardImpl);
void flash_backward(const BackwardParams& p) { HWY_DYNAMIC_DISPATCH(BackwardImpl)(p); }
}  // namespace flashattn::detail::cpu
#endif
