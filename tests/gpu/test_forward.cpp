// The CUDA forward kernels (cuda_portable, cuda_sm80), each forced through
// Options::backend, against the CPU fp64 reference on fresh random inputs with
// NaN-poisoned outputs: every feature, dtype, head dim (odd ones on portable,
// padded ones on sm80) and odd sizes. fp16/bf16 use flash_attn's rule.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gpu_support.hpp"

namespace {

using fa_test::AlibiKind;
using fa_test::BiasKind;
using fa_test::Case;
using fa_test::Layout;
using flashattn::Alignment;
using flashattn::Backend;
using flashattn::DType;

struct Param {
  Backend backend;
  Case c;
};

std::string param_name(const testing::TestParamInfo<Param>& info) {
  return std::string(info.param.backend == Backend::cuda_sm80 ? "sm80_" : "portable_") + info.param.c.name() +
         "_" + std::to_string(info.index);
}

Case base(DType dt, int d, std::int64_t sq, std::int64_t sk, Layout layout = Layout::bshd) {
  Case c;
  c.dtype = dt;
  c.head_dim = d;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.layout = layout;
  return c;
}

// Cases both kernels run. `lows`: fp16/bf16 alternate where one suffices;
// `d`/`d2`: the head dims used for features (sm80: multiples of 8).
void feature_cases(std::vector<Param>& v, Backend be, const std::vector<DType>& dtypes, int d, int d2,
                   Layout strided) {
  auto add = [&](const Case& c) { v.push_back({be, c}); };
  int n = 0;
  auto dt_next = [&] { return dtypes[n++ % dtypes.size()]; };
  // Odd sizes, Sq != Sk both ways.
  for (auto [sq, sk] : {std::pair<int, int>{1, 1}, {17, 17}, {113, 113}, {1, 700}, {700, 1}, {113, 1000}, {1000, 113}}) {
    Case c = base(dt_next(), d, sq, sk);
    add(c);
    c.causal = true;
    add(c);
    c.alignment = Alignment::top_left;
    add(c);
  }
  {
    Case c = base(dtypes.back(), d2, 1000, 1000);
    c.batch = 1;
    c.heads_q = 2;
    c.heads_kv = 1;
    add(c);
  }
  {
    Case c = base(dtypes.front(), d, 4097, 4097);
    c.batch = 1;
    c.heads_q = c.heads_kv = 1;
    c.causal = true;
    add(c);
  }
  // Sliding windows, both alignments, Sq != Sk.
  for (auto [l, r] : {std::pair<int, int>{50, 20}, {0, 0}, {100, -1}, {-1, 30}})
    for (Alignment a : {Alignment::bottom_right, Alignment::top_left}) {
      Case c = base(dt_next(), d, 333, 517);
      c.window_left = l;
      c.window_right = r;
      c.alignment = a;
      add(c);
    }
  // Softcap and a custom scale.
  for (int dd : {d, d2}) {
    Case c = base(dt_next(), dd, 257, 190);
    c.softcap = 2.0f;
    c.scale = 0.6f;
    add(c);
  }
  // Bias: every broadcast, q-dtype and fp32, with a causal mask once.
  for (BiasKind bk : {BiasKind::full, BiasKind::bcast_batch, BiasKind::bcast_heads, BiasKind::bcast_both})
    for (bool f32 : {false, true}) {
      Case c = base(dt_next(), d, 97, 211);
      c.bias = bk;
      c.bias_f32 = f32;
      c.causal = bk == BiasKind::full && f32;
      add(c);
    }
  // ALiBi, per head and per (batch, head), causal and not.
  for (AlibiKind ak : {AlibiKind::per_head, AlibiKind::per_batch_head})
    for (bool causal : {false, true}) {
      Case c = base(dt_next(), d2, 150, 150);
      c.alibi = ak;
      c.causal = causal;
      add(c);
    }
  // GQA and MQA.
  for (int hkv : {2, 1}) {
    Case c = base(dt_next(), d, 129, 129);
    c.heads_q = 4;
    c.heads_kv = hkv;
    c.causal = hkv == 1;
    add(c);
  }
  // Varlen with empty sequences, plain, causal, windowed with bias.
  {
    Case c = base(dt_next(), d, 0, 0);
    c.varlen_q = {0, 17, 113, 1, 64};
    c.varlen_k = {5, 0, 130, 7, 64};
    c.varlen_pad_rows = 3;
    add(c);
    c.causal = true;
    add(c);
    c.causal = false;
    c.window_left = 10;
    c.window_right = 3;
    c.bias = BiasKind::full;
    c.dtype = dt_next();
    add(c);
  }
  // Strided layouts.
  for (bool causal : {false, true}) {
    Case c = base(dt_next(), d2, 77, 300, strided);
    c.causal = causal;
    add(c);
  }
  // Everything at once.
  {
    Case c = base(dt_next(), d2, 200, 333, strided);
    c.heads_q = 4;
    c.heads_kv = 2;
    c.causal = true;
    c.softcap = 3.0f;
    c.bias = BiasKind::bcast_batch;
    c.alibi = AlibiKind::per_head;
    add(c);
  }
}

std::vector<Param> portable_cases() {
  std::vector<Param> v;
  // Every dtype on every head-dim bucket edge and odd dims.
  for (DType dt : {DType::f32, DType::f16, DType::bf16})
    for (int d : {1, 7, 32, 33, 64, 80, 128, 130, 200, 256}) {
      Case c = base(dt, d, 113, 77);
      c.causal = d % 2 == 1;
      v.push_back({Backend::cuda_portable, c});
    }
  // The register-tiled fp32 kernel (head dims 33..256): several query and key
  // tiles with ragged ends, every bucket, 16-byte and 4-byte copies (d 98, 162).
  for (int d : {96, 98, 128, 162, 256})
    for (bool causal : {false, true}) {
      Case c = base(DType::f32, d, 300, 517);
      c.causal = causal;
      c.alignment = d == 98 || d == 162 ? Alignment::top_left : Alignment::bottom_right;
      v.push_back({Backend::cuda_portable, c});
    }
  feature_cases(v, Backend::cuda_portable, {DType::f32, DType::bf16, DType::f16}, 64, 33, Layout::padded);
  return v;
}

std::vector<Param> sm80_cases() {
  std::vector<Param> v;
  // Native head dims and padded ones (8, 40, 80, 104, 136, 248), both dtypes.
  for (DType dt : {DType::f16, DType::bf16})
    for (int d : {8, 40, 64, 80, 96, 104, 128, 136, 192, 248, 256}) {
      Case c = base(dt, d, 300, 300);
      c.causal = d % 16 == 0;
      v.push_back({Backend::cuda_sm80, c});
    }
  feature_cases(v, Backend::cuda_sm80, {DType::bf16, DType::f16}, 128, 64, Layout::bhsd);
  // Head dims 256 (v5's lean kernel), 64 and 128 with masks only: odd sizes, both causal
  // alignments, several query and key tiles, windows, GQA, varlen with empty
  // sequences, strided layouts; the GQA/MQA pair's MQA case runs padded (d - 8).
  for (int dl : {256, 64, 128}) {
    int n = 0;
    auto dt_next = [&] { return n++ % 2 ? DType::f16 : DType::bf16; };
    for (auto [sq, sk] : {std::pair<int, int>{17, 17}, {113, 1000}, {1000, 113}, {700, 1}, {1, 700}}) {
      Case c = base(dt_next(), dl, sq, sk);
      v.push_back({Backend::cuda_sm80, c});
      c.causal = true;
      v.push_back({Backend::cuda_sm80, c});
      c.alignment = Alignment::top_left;
      v.push_back({Backend::cuda_sm80, c});
    }
    for (auto [l, r] : {std::pair<int, int>{50, 20}, {0, 0}, {100, -1}, {-1, 30}})
      for (Alignment a : {Alignment::bottom_right, Alignment::top_left}) {
        Case c = base(dt_next(), dl, 333, 517);
        c.window_left = l;
        c.window_right = r;
        c.alignment = a;
        v.push_back({Backend::cuda_sm80, c});
      }
    for (int hkv : {2, 1}) {
      Case c = base(dt_next(), hkv == 1 ? dl - 8 : dl, 129, 129);
      c.heads_q = 4;
      c.heads_kv = hkv;
      c.causal = hkv == 1;
      v.push_back({Backend::cuda_sm80, c});
    }
    {
      Case c = base(dt_next(), dl, 0, 0);
      c.varlen_q = {0, 17, 113, 1, 64};
      c.varlen_k = {5, 0, 130, 7, 64};
      c.varlen_pad_rows = 3;
      v.push_back({Backend::cuda_sm80, c});
      c.causal = true;
      v.push_back({Backend::cuda_sm80, c});
    }
    for (bool causal : {false, true}) {
      Case c = base(dt_next(), dl, 77, 300, Layout::bhsd);
      c.causal = causal;
      v.push_back({Backend::cuda_sm80, c});
    }
  }
  // The large head dims with features (Q read from shared memory there).
  for (int d : {192, 256}) {
    Case c = base(DType::bf16, d, 200, 333, Layout::bhsd);
    c.causal = true;
    c.softcap = 3.0f;
    c.bias = BiasKind::full;
    c.alibi = AlibiKind::per_head;
    v.push_back({Backend::cuda_sm80, c});
  }
  return v;
}

class Forward : public testing::TestWithParam<Param> {};

TEST_P(Forward, MatchesReference) {
  FA_SKIP_WITHOUT_GPU(GetParam().backend == Backend::cuda_sm80 ? 80 : 75);
  fa_gpu::expect_forward_matches(GetParam().c, GetParam().backend);
}

INSTANTIATE_TEST_SUITE_P(Portable, Forward, testing::ValuesIn(portable_cases()), param_name);
INSTANTIATE_TEST_SUITE_P(Sm80, Forward, testing::ValuesIn(sm80_cases()), param_name);

}  // namespace
