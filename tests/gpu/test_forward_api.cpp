// The CUDA forward through the public API: which kernel automatic dispatch
// picks, what happens to pointers the tensor-core kernel cannot take, host
// pointers declared as CUDA, and a call captured into a CUDA graph and replayed
// on new inputs.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "gpu_support.hpp"

namespace {

using fa_test::Case;
using fa_test::Layout;
using flashattn::Backend;
using flashattn::DType;
using flashattn::ErrorCode;
using flashattn::TensorView;

Case make_case(DType dt, int d, Layout layout = Layout::bshd) {
  Case c;
  c.dtype = dt;
  c.head_dim = d;
  c.seqlen_q = 130;
  c.seqlen_k = 200;
  c.layout = layout;
  return c;
}

void check_against_reference(const fa_test::Problem& p, const fa_test::Outputs& ours) {
  const fa_test::Outputs ref = fa_test::run_reference(p, false);
  const bool low = p.c.dtype != DType::f32;
  fa_test::Outputs naive;
  if (low) naive = fa_test::run_naive_low_precision(p, false);
  for (const fa_test::Verdict& v : fa_test::check_outputs(p, ours, ref, low ? &naive : nullptr, false))
    EXPECT_TRUE(v.ok) << p.describe() << "\n" << v;
}

TEST(ForwardDispatch, Bf16Head128UsesTensorCores) {
  FA_SKIP_WITHOUT_GPU(80);
  const fa_test::Problem p = fa_test::make_problem(make_case(DType::bf16, 128));
  fa_gpu::DeviceArena arena;
  // The Hopper kernel outranks sm80 where it supports the call.
  const bool sm90 = flashattn::supports(Backend::cuda_sm90, arena.upload(p.q), arena.upload(p.k),
                                        arena.upload(p.v), p.options(Backend::cuda_sm90))
                        .ok;
  const fa_gpu::GpuRun r = fa_gpu::run_forward(p, Backend::automatic);
  EXPECT_EQ(r.ran, sm90 ? Backend::cuda_sm90 : Backend::cuda_sm80) << flashattn::backend_name(r.ran);
  check_against_reference(p, r.out);
}

TEST(ForwardDispatch, Fp32UsesPortable) {
  FA_SKIP_WITHOUT_GPU(75);
  const fa_test::Problem p = fa_test::make_problem(make_case(DType::f32, 64));
  const fa_gpu::GpuRun r = fa_gpu::run_forward(p, Backend::automatic);
  EXPECT_EQ(r.ran, Backend::cuda_portable) << flashattn::backend_name(r.ran);
  check_against_reference(p, r.out);
}

// Rows 3 elements past a multiple of 8: cp.async cannot take them, so sm80
// refuses with a reason and automatic dispatch runs the portable kernel.
TEST(ForwardDispatch, UnalignedStridesFallBackToPortable) {
  FA_SKIP_WITHOUT_GPU(80);
  const fa_test::Problem p = fa_test::make_problem(make_case(DType::bf16, 64, Layout::padded));
  fa_gpu::DeviceArena arena;
  const flashattn::Support s = flashattn::supports(Backend::cuda_sm80, arena.upload(p.q), arena.upload(p.k),
                                                   arena.upload(p.v), p.options(Backend::cuda_sm80));
  EXPECT_FALSE(s.ok);
  EXPECT_NE(std::string(s.reason ? s.reason : "").find("multiples of 8"), std::string::npos) << s.reason;
  EXPECT_THROW(
      {
        try {
          fa_gpu::run_forward(p, Backend::cuda_sm80);
        } catch (const flashattn::Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
          throw;
        }
      },
      flashattn::Error);
  const fa_gpu::GpuRun r = fa_gpu::run_forward(p, Backend::automatic);
  EXPECT_EQ(r.ran, Backend::cuda_portable) << flashattn::backend_name(r.ran);
  check_against_reference(p, r.out);
}

// q 2 bytes past a 16-byte boundary: same story for a misaligned base pointer.
TEST(ForwardDispatch, MisalignedPointerFallsBackToPortable) {
  FA_SKIP_WITHOUT_GPU(80);
  const fa_test::Problem p = fa_test::make_problem(make_case(DType::f16, 128));
  fa_gpu::DeviceArena arena;
  fa_test::Outputs o = fa_test::alloc_outputs(p, false);
  const TensorView q = arena.upload(p.q, 2), k = arena.upload(p.k), v = arena.upload(p.v);
  const TensorView out = arena.upload(o.out), lse = arena.upload(o.lse);
  flashattn::Options opt = p.options(Backend::cuda_sm80);
  try {
    flashattn::forward(q, k, v, out, lse, opt);
    ADD_FAILURE() << "sm80 accepted a misaligned q";
  } catch (const flashattn::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find("aligned"), std::string::npos) << e.what();
  }
  opt.backend = Backend::automatic;
  const flashattn::Result r = flashattn::forward(q, k, v, out, lse, opt);
  EXPECT_EQ(r.backend, Backend::cuda_portable) << flashattn::backend_name(r.backend);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  fa_gpu::download(o.out, out);
  fa_gpu::download(o.lse, lse);
  check_against_reference(p, o);
}

TEST(ForwardErrors, HostPointerDeclaredOnCudaIsRejected) {
  FA_SKIP_WITHOUT_GPU(75);
  const fa_test::Problem p = fa_test::make_problem(make_case(DType::f32, 32));
  fa_gpu::DeviceArena arena;
  fa_test::Outputs o = fa_test::alloc_outputs(p, false);
  // q's data stays in host memory but the view says cuda:0.
  const TensorView q = p.q.view_on(const_cast<void*>(p.q.data()), flashattn::Device{flashattn::DeviceKind::cuda, 0});
  try {
    flashattn::forward(q, arena.upload(p.k), arena.upload(p.v), arena.upload(o.out), arena.upload(o.lse),
                       p.options(Backend::automatic));
    ADD_FAILURE() << "a host pointer declared as CUDA was accepted";
  } catch (const flashattn::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::device_mismatch) << e.what();
  }
}

// One forward captured on a stream, replayed twice with new inputs copied into
// the same buffers: the graph must recompute, not replay stale results.
void graph_replay(Backend backend, DType dt, int d) {
  Case c = make_case(dt, d);
  c.causal = true;
  fa_test::Problem p = fa_test::make_problem(c);
  fa_gpu::DeviceArena arena;
  fa_test::Outputs o = fa_test::alloc_outputs(p, false);
  const TensorView q = arena.upload(p.q), k = arena.upload(p.k), v = arena.upload(p.v);
  const TensorView out = arena.upload(o.out), lse = arena.upload(o.lse);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  flashattn::Options opt = p.options(backend);
  opt.stream = stream;
  flashattn::forward(q, k, v, out, lse, opt);  // warm-up outside the capture
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);

  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const flashattn::Result r = flashattn::forward(q, k, v, out, lse, opt);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_EQ(r.backend, backend);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  for (int replay = 0; replay < 2; ++replay) {
    fa_test::Problem fresh = fa_test::make_problem(c);  // new random inputs, same shapes
    fa_test::Outputs poisoned = fa_test::alloc_outputs(fresh, false);
    ASSERT_EQ(cudaMemcpy(q.data, fresh.q.data(), fresh.q.storage_bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(k.data, fresh.k.data(), fresh.k.storage_bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(v.data, fresh.v.data(), fresh.v.storage_bytes(), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(out.data, poisoned.out.data(), poisoned.out.storage_bytes(), cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaMemcpy(lse.data, poisoned.lse.data(), poisoned.lse.storage_bytes(), cudaMemcpyHostToDevice),
              cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    fa_gpu::download(poisoned.out, out);
    fa_gpu::download(poisoned.lse, lse);
    check_against_reference(fresh, poisoned);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(ForwardGraph, PortableCaptureAndReplay) {
  FA_SKIP_WITHOUT_GPU(75);
  graph_replay(Backend::cuda_portable, DType::f32, 64);
}

TEST(ForwardGraph, Sm80CaptureAndReplay) {
  FA_SKIP_WITHOUT_GPU(80);
  graph_replay(Backend::cuda_sm80, DType::bf16, 128);
}

}  // namespace
