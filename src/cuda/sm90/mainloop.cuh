// The producer/consumer pipeline. One thread of the producer warpgroup streams Q
// (once per tile) and K, V (one stage per key block) into a ring of shared-memory
// stages with TMA. Each operand of a stage has a "full" mbarrier (completed by the
// copy engine's byte count) and an "empty" one (completed when every consumer
// thread is done reading it; K is released as soon as its S is in, V after P.V).
// Two consumer warpgroups run S = Q.K^T and O += P.V on wgmma with the online
// softmax in between, taking turns on the tensor cores (ping-pong).
#pragma once
#include <cuda.h>

#include <cstdint>

#include "cuda/sm90/epilogue.cuh"
#include "cuda/sm90/heuristics.hpp"
#include "cuda/sm90/ptx.cuh"
#include "cuda/sm90/scheduler.cuh"
#include "cuda/sm90/softmax.cuh"
#include "cuda/sm90/tma.cuh"

namespace flashattn::detail::cuda::sm90 {

struct KernelArgs {
  CUtensorMap tq, tk, tv;  // 64-byte aligned; read by the copy engine from param space
  ForwardParams p;
  Scheduler sched;
  SoftmaxParams sm;
  bool defer_epilogue;  // store O under the next tile's first S (A/B switch)
  // Always 1 (set by the host): a branch on it is uniform and opaque to ptxas,
  // which folds constants the compiler cannot see (the late P.V wait, below).
  int one;
};

// Carve-up of the (1024-aligned) dynamic shared memory: Q, K stages, V stages,
// then the barriers. Stage addresses are computed, not stored in an array, so a
// run-time stage index never sends the table to local memory.
template <class Cfg>
struct SmemLayout {
  unsigned char* q;
  std::uint64_t* q_full;
  std::uint64_t* q_empty;
  std::uint64_t* k_full;    // [kStages]
  std::uint64_t* v_full;    // [kStages]
  std::uint64_t* k_empty;   // [kStages]: K of the stage read by every consumer
  std::uint64_t* v_empty;   // [kStages]: V likewise (K is released a GEMM earlier)

  __device__ __forceinline__ explicit SmemLayout(unsigned char* raw) {
    const std::uintptr_t base = (reinterpret_cast<std::uintptr_t>(raw) + 1023) & ~std::uintptr_t(1023);
    q = reinterpret_cast<unsigned char*>(base);
    auto* bars = reinterpret_cast<std::uint64_t*>(q + Cfg::kQBytes + 2 * Cfg::kStages * Cfg::kKVBytes);
    q_full = bars;
    q_empty = bars + 1;
    k_full = bars + 2;
    v_full = k_full + Cfg::kStages;
    k_empty = v_full + Cfg::kStages;
    v_empty = k_empty + Cfg::kStages;
  }
  __device__ __forceinline__ unsigned char* k(int s) const { return q + Cfg::kQBytes + s * Cfg::kKVBytes; }
  __device__ __forceinline__ unsigned char* v(int s) const {
    return q + Cfg::kQBytes + (Cfg::kStages + s) * Cfg::kKVBytes;
  }
};

template <class Cfg>
__device__ __forceinline__ void producer_loop(const KernelArgs& a, SmemLayout<Cfg>& sm) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  const ForwardParams& p = a.p;
  const bool varlen = p.cu_seqlens_q != nullptr;
  int tile_iter = 0, kv_iter = 0;
  TileCoord c;
  for (int k = 0; a.sched.tile_at(k, blockIdx.x, gridDim.x, c); ++k) {
    if (c.m_block < 0) continue;
    const BlockInfo<BM, BN> info(p, c);
    if (!info.valid) continue;
    const int tb = varlen ? 0 : c.batch;  // tensor-map batch coordinate
    if (tile_iter > 0) mbar_wait(sm.q_empty, (tile_iter - 1) & 1);
    mbar_expect_tx(sm.q_full, Cfg::kQBytes);
    const int q_row = int(info.seq.q_row0 + info.m0);
#pragma unroll
    for (int ch = 0; ch < Cfg::kChunks; ++ch)
      tma_load(sm.q + ch * Cfg::kQChunkBytes, &a.tq, ch * 64, q_row, c.head, tb, sm.q_full);
    const int hk = kv_head(p, c.head);
    for (int n = info.n_hi - 1; n >= info.n_lo; --n, ++kv_iter) {
      const int s = kv_iter % Cfg::kStages;
      const std::uint32_t phase = (kv_iter / Cfg::kStages) & 1;
      const int k_row = int(info.seq.k_row0 + std::int64_t(n) * BN);
      if (kv_iter >= Cfg::kStages) mbar_wait(&sm.k_empty[s], phase ^ 1);
      mbar_expect_tx(&sm.k_full[s], Cfg::kKVBytes);
#pragma unroll
      for (int ch = 0; ch < Cfg::kChunks; ++ch)
        tma_load(sm.k(s) + ch * Cfg::kKVChunkBytes, &a.tk, ch * 64, k_row, hk, tb, &sm.k_full[s]);
      if (kv_iter >= Cfg::kStages) mbar_wait(&sm.v_empty[s], phase ^ 1);
      mbar_expect_tx(&sm.v_full[s], Cfg::kKVBytes);
#pragma unroll
      for (int ch = 0; ch < Cfg::kChunks; ++ch)
        tma_load(sm.v(s) + ch * Cfg::kKVChunkBytes, &a.tv, ch * 64, k_row, hk, tb, &sm.v_full[s]);
    }
    ++tile_iter;
  }
}

// Varlen: the rows of the last K/V block past the sequence end belong to the next
// sequence or to memory outside any (which may hold NaN). Their scores are masked,
// but 0 * NaN in P.V would still poison O, so those V rows are zeroed in shared
// memory. Both consumer warpgroups split the work and meet at a named barrier.
template <class Cfg>
__device__ __forceinline__ void zero_v_tail(unsigned char* v, int valid_rows) {
  constexpr int kUnitsPerRow = Cfg::kChunks * 8;  // 16-byte units of one key row
  const int units = (Cfg::kBlockN - valid_rows) * kUnitsPerRow;
  const int ct = threadIdx.x - 128;  // consumer thread index
  for (int u = ct; u < units; u += 128 * Cfg::kConsumerWarpgroups) {
    const int row = valid_rows + u / kUnitsPerRow, rest = u % kUnitsPerRow;
    // A row's 128 bytes stay together under the swizzle, whatever the unit order.
    *reinterpret_cast<uint4*>(v + (rest / 8) * Cfg::kKVChunkBytes + row * 128 + (rest % 8) * 16) = make_uint4(0, 0, 0, 0);
  }
  // Generic-proxy writes read next by wgmma (async proxy).
  ::cuda::ptx::fence_proxy_async(::cuda::ptx::space_shared);
  named_barrier_sync(1, 128 * Cfg::kConsumerWarpgroups);
}

// One consumer warpgroup's walk over its tiles. With kOverlap the GEMMs overlap
// the softmax: S(n-1) = Q.K(n-1)^T and O += P(n).V(n) are issued together, the
// softmax of S(n-1) runs while P.V is still on the tensor cores, and O is rescaled
// once P.V has landed. Without it (no registers to hold S and P at once) S(n-1)
// is issued in the same batch as P.V but the softmax waits for both; the other
// consumer warpgroup keeps the tensor cores busy meanwhile.
// Cfg::kPackedEpilogue: the deferred epilogue converts O to the output type
// before the next tile's first S is issued and stores the packed values under
// it. Reading O's float registers after that issue instead makes ptxas, which
// treats them as GMMA-defined, inject a wgmma wait there (info C7517): the
// stores then start only after the S has landed.
// kLateWait (D = 128's default; A/B switch FLASHATTN_SM90_LATE_WAIT=0): the P.V
// wait of the overlapped loop is placed after the softmax's exponentials (see
// there). Instantiated at D = 128 only: at D = 64 it measured 3% slower (run F8).
template <class Cfg, typename T, bool kLateWait = false>
__device__ __forceinline__ void consumer_loop(const KernelArgs& a, SmemLayout<Cfg>& sm, int wg) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, D = Cfg::kHeadDim;
  using GemmS = Wgmma<BN, T>;
  using GemmO = Wgmma<D, T>;
  const ForwardParams& p = a.p;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int t = threadIdx.x % 128;
  const int lane = t % 32;
  float o[D / 2];
  float s[BN / 2];
  std::uint32_t pa[BN / 16][4];
  OnlineSoftmax<BN, Cfg::kLazyRescale> softmax;
  int tile_iter = 0, kv_iter = 0;

  // Q of this warpgroup: rows 64*wg.. of each 64-column chunk.
  const unsigned char* q_wg = sm.q + wg * 64 * 128;
  auto issue_s = [&](int st) {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) fence_operand(s[i]);
    wgmma_fence();
    // Descriptors: the tile's base once, then a constant byte step per k-step.
    const std::uint32_t q_lo = desc_lo(q_wg, 16), k_lo = desc_lo(sm.k(st), 16);
    constexpr std::uint32_t hi = desc_hi(1024);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const int off = (ks % 4) * 32;  // 16 elements = 32 bytes inside the 128-byte row
      GemmS::ss(s, make_desc(q_lo, (ks / 4) * Cfg::kQChunkBytes + off, hi),
                make_desc(k_lo, (ks / 4) * Cfg::kKVChunkBytes + off, hi), ks > 0);
    }
    wgmma_commit();
  };
  auto issue_pv = [&](int st) {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) fence_operand(o[i]);
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks)
#pragma unroll
      for (int r = 0; r < 4; ++r) fence_operand(pa[ks][r]);
    wgmma_fence();
    // V stage: keys along rows, 16 keys = 2048 bytes per k-step; the 64-wide
    // column chunks sit kKVChunkBytes apart (LBO).
    const std::uint32_t v_lo = desc_lo(sm.v(st), Cfg::kKVChunkBytes);
    constexpr std::uint32_t hi = desc_hi(1024);
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) GemmO::rs(o, pa[ks], make_desc(v_lo, ks * 2048, hi));
    wgmma_commit();
  };
  auto fence_s = [&] {
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) fence_operand(s[i]);
  };
  auto fence_o = [&] {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) fence_operand(o[i]);
  };
  auto to_p = [&] {
#pragma unroll
    for (int ks = 0; ks < BN / 16; ++ks) p_fragment<T>(s, ks, pa[ks]);
  };

  // Ping-pong (FlashAttention-3): the consumer warpgroups take turns issuing their
  // GEMMs in a ring 0, 1, (2,) 0, ..., so one's softmax (bound by the 16 exp/clock/SM
  // of the MUFU) runs while the others' GEMMs keep the tensor cores busy. Named
  // barrier 2 + w is "warpgroup w may issue"; each warpgroup opens the next one's
  // after issuing. All walk the same tiles and key blocks, so their issue points
  // pair up one to one.
  constexpr int kWgs = Cfg::kConsumerWarpgroups;
  const int next = wg + 1 == kWgs ? 0 : wg + 1;
  auto turn_begin = [&] { named_barrier_sync(2 + wg, 256); };
  auto turn_end = [&] { named_barrier_arrive(2 + next, 256); };
  if (wg == kWgs - 1) named_barrier_arrive(2, 256);  // warpgroup 0 goes first

  // Deferred epilogue: a finished tile's O waits in registers until the next tile's
  // first S is issued, and is stored while that GEMM runs (the stores of 64 x D
  // values leave the critical path between two tiles). pending_k: the slot of the
  // waiting tile, -1 for none; inv/lse: its normalizers.
  int pending_k = -1;
  float inv[2], lse[2];
  TileCoord c;
  auto store_tile = [&](int kk) {
    // The tile's coordinates again, from its slot through an opaque copy so the
    // compiler recomputes them instead of holding three more registers.
    opaque_int(kk);
    a.sched.tile_at(kk, blockIdx.x, gridDim.x, c);
    const BlockInfo<BM, BN> info(p, c);
    store_output<T, D>(p, c.batch, c.head, info.seq, info.m0 + 64 * wg, o, inv, lse);
  };
  auto flush = [&] {
    if (pending_k < 0) return;
    if constexpr (Cfg::kPackedEpilogue) {
      int kk = pending_k;
      opaque_int(kk);
      a.sched.tile_at(kk, blockIdx.x, gridDim.x, c);
      const BlockInfo<BM, BN> info(p, c);
      store_output_packed<T, D>(p, c.batch, c.head, info.seq, info.m0 + 64 * wg, o, lse);
    } else {
      store_tile(pending_k);
    }
    pending_k = -1;
  };
  auto start_tile = [&] {
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    // Packed epilogue: the zeros stay after the packed stores (volatile asm keeps
    // its order), so O's registers hold nothing while the packed values are live.
    if constexpr (Cfg::kPackedEpilogue) fence_o();
    softmax.reset();
  };

  for (int k = 0; a.sched.tile_at(k, blockIdx.x, gridDim.x, c); ++k) {
    if (c.m_block < 0) continue;
    // Only 32-bit values stay live through the mainloop; the epilogue recomputes
    // the rest (registers are tight beside a 64 x 256 accumulator).
    int kb[2], ke[2], len_k, n_lo, n_hi, full_lo, full_hi;
    {
      const BlockInfo<BM, BN> info(p, c);
      if (!info.valid) continue;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const std::int64_t r = info.m0 + 64 * wg + 16 * (t / 32) + lane / 4 + 8 * h;
        const std::int64_t b = info.mask.key_begin(r);
        kb[h] = int(b < info.seq.len_k ? b : info.seq.len_k);
        ke[h] = int(info.mask.key_end(r));
      }
      len_k = int(info.seq.len_k);
      n_lo = info.n_lo;
      n_hi = info.n_hi;
      full_lo = info.full_lo;
      full_hi = info.full_hi;
    }
    auto needs_mask = [&](int n) { return n * BN < full_lo || n * BN + BN > full_hi; };
    if constexpr (!Cfg::kDeferEpilogue) start_tile();
    mbar_wait(sm.q_full, tile_iter & 1);
    auto v_ready = [&](int st, int n) {
      mbar_wait(&sm.v_full[st], (kv_iter / Cfg::kStages) & 1);
      const int tail = len_k - n * BN;
      if (varlen && tail < BN) zero_v_tail<Cfg>(sm.v(st), tail);
    };

    int n = n_hi - 1;
    if (n >= n_lo) {
      // Prologue: the first S and its softmax.
      int st = kv_iter % Cfg::kStages;
      mbar_wait(&sm.k_full[st], (kv_iter / Cfg::kStages) & 1);
      turn_begin();
      issue_s(st);
      turn_end();
      if constexpr (Cfg::kDeferEpilogue) {
        flush();  // the previous tile's O, under this S
        start_tile();
      }
      wgmma_wait<0>();
      fence_s();
      mbar_arrive(&sm.k_empty[st]);
      // Q is free once the tile's last S is in: the producer can bring the next
      // tile's Q during this tile's last softmax, P.V and epilogue.
      if (n == n_lo) mbar_arrive(sm.q_empty);
      float corr[2];
      softmax.step(s, a.sm, needs_mask(n), n * BN, kb, ke, corr);
      to_p();
      for (; n > n_lo; --n) {
        const int st_next = (kv_iter + 1) % Cfg::kStages;
        // V(n) first: its tail fix-up then runs while S's registers are free.
        v_ready(st, n);
        if constexpr (Cfg::kOverlap) {
          mbar_wait(&sm.k_full[st_next], ((kv_iter + 1) / Cfg::kStages) & 1);
          turn_begin();
          issue_s(st_next);
          issue_pv(st);
          turn_end();
          wgmma_wait<1>();  // S(n-1) is in; P(n).V(n) may still run
          fence_s();
          mbar_arrive(&sm.k_empty[st_next]);  // the producer may refill K right away
          if (n - 1 == n_lo) mbar_arrive(sm.q_empty);
          softmax.step(s, a.sm, needs_mask(n - 1), (n - 1) * BN, kb, ke, corr);
          if constexpr (kLateWait) {
            // The P.V wait after a branch: ptxas hoists a wgmma wait to the top of
            // its basic block (it sat among the row maxima, before every
            // exponential); behind a branch it can only come after the softmax.
            // The branch is on a.one (always 1, a kernel parameter: a constant
            // hidden only from the C++ compiler was folded by ptxas) so that all
            // warps of the warpgroup take the same side: wgmma.wait_group is
            // .aligned, and a branch on the warp's rescale vote (tried first) let
            // the warps of one warpgroup run different waits (synccheck errors); a
            // warpgroup vote (bar.red) fixed that but cost the gain (run F6). The
            // other side is never run; it is complete (rescales unconditionally)
            // and its wait differs in text, so that the compiler keeps both.
            if (a.one != 0) {
              wgmma_wait<0>();
              fence_o();
              if (!Cfg::kLazyRescale || __any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {
#pragma unroll
                for (int i = 0; i < D / 2; ++i) o[i] *= corr[(i >> 1) & 1];
              }
            } else {
              wgmma_wait_alt<0>();
              fence_o();
#pragma unroll
              for (int i = 0; i < D / 2; ++i) o[i] *= corr[(i >> 1) & 1];
            }
            mbar_arrive(&sm.v_empty[st]);
            to_p();
            ++kv_iter;
            st = st_next;
            continue;
          }
          wgmma_wait<0>();
          fence_o();
          mbar_arrive(&sm.v_empty[st]);
        } else {
          mbar_wait(&sm.k_full[st_next], ((kv_iter + 1) / Cfg::kStages) & 1);
          turn_begin();
          issue_pv(st);
          issue_s(st_next);
          turn_end();
          wgmma_wait<0>();
          fence_s();
          fence_o();
          mbar_arrive(&sm.k_empty[st_next]);
          mbar_arrive(&sm.v_empty[st]);
          if (n - 1 == n_lo) mbar_arrive(sm.q_empty);
          softmax.step(s, a.sm, needs_mask(n - 1), (n - 1) * BN, kb, ke, corr);
        }
        // Most blocks change no row's max (lazy rescaling): skip the D/2 multiplies
        // when no row of the warp needs them (a warp-uniform branch).
        if (!Cfg::kLazyRescale || __any_sync(0xffffffffu, corr[0] != 1.0f || corr[1] != 1.0f)) {
#pragma unroll
          for (int i = 0; i < D / 2; ++i) o[i] *= corr[(i >> 1) & 1];
        }
        to_p();
        ++kv_iter;
        st = st_next;
      }
      // Epilogue of the pipeline: the last P.V.
      v_ready(st, n);
      turn_begin();
      issue_pv(st);
      turn_end();
      wgmma_wait<0>();
      fence_o();
      mbar_arrive(&sm.v_empty[st]);
      ++kv_iter;
    }
    if (n_hi <= n_lo) {  // no key block: Q was never read; O = 0, lse = -inf
      mbar_arrive(sm.q_empty);
      if constexpr (Cfg::kDeferEpilogue) {
        flush();
        start_tile();
      }
    }
    softmax.finish(a.sm, inv, lse);
    if (Cfg::kDeferEpilogue && a.defer_epilogue) {
      if constexpr (Cfg::kPackedEpilogue) pack_output<T, D>(o, inv);
      pending_k = k;
    } else
      store_tile(k);
    ++tile_iter;
  }
  if constexpr (Cfg::kDeferEpilogue) flush();
  // The last warpgroup's last turn_end opened barrier 2 with nobody to take it:
  // take it, so that no named barrier is left half-arrived at exit.
  if (wg == 0) named_barrier_sync(2, 256);
}

}  // namespace flashattn::detail::cuda::sm90
