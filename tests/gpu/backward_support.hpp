// Helpers shared by the GPU backward suites (test_backward.cpp: portable and sm80;
// test_sm90_backward.cpp: the Hopper kernel): a backward through the public API
// from the reference forward's out/lse with poisoned gradients, the comparison
// with the fp64 reference under the one tolerance rule, and the feature case list.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "gpu_support.hpp"
#include "support.hpp"

namespace fa_gpu {

struct GpuGrads {
  fa_test::Outputs o;  // out/lse are the forward inputs; dq/dk/dv/dbias come from the GPU
  flashattn::Backend ran = flashattn::Backend::automatic;
};

// Backward on the GPU from the reference forward's out/lse (so only the backward
// is under test), gradients poisoned with NaN before the launch. grad_offset
// shifts dout and the gradients off 16-byte alignment (bytes).
GpuGrads run_backward(const fa_test::Problem& p, flashattn::Backend backend, bool deterministic,
                      std::size_t grad_offset = 0);

// The support reason when the backend cannot take this backward call; empty when it can.
std::string backward_unsupported(const fa_test::Problem& p, flashattn::Backend backend);

// run_backward against run_reference(p, true) with fa_test::check on dq, dk, dv
// (and dbias). A refused call is a skip, or a failure when must_support is set.
// `expect_ran`: the backend Result must name (automatic: the forced one).
void expect_backward_matches(const fa_test::Case& c, flashattn::Backend backend, bool deterministic,
                             std::size_t grad_offset = 0, bool must_support = false,
                             flashattn::Backend expect_ran = flashattn::Backend::automatic);

// Every feature once, on fp32/fp16/bf16 and a few head dims; sizes odd on purpose.
std::vector<fa_test::Case> backward_feature_cases();

}  // namespace fa_gpu
