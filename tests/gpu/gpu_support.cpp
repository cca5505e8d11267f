#include "gpu_support.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fa_gpu {

using flashattn::Device;
using flashattn::DeviceKind;
using flashattn::TensorView;

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

int device_arch() {
  if (device_count() == 0) return 0;
  int major = 0, minor = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) != cudaSuccess)
    return 0;
  return major * 10 + minor;
}

DeviceArena::~DeviceArena() {
  for (void* p : ptrs_) cudaFree(p);
}

void* DeviceArena::alloc(std::size_t bytes) {
  void* d = nullptr;
  const cudaError_t err = cudaMalloc(&d, std::max<std::size_t>(bytes, 16));
  if (err != cudaSuccess) throw std::runtime_error(std::string("cudaMalloc: ") + cudaGetErrorString(err));
  ptrs_.push_back(d);
  return d;
}

TensorView DeviceArena::upload(const fa_test::HostTensor& t, std::size_t offset_bytes) {
  char* d = static_cast<char*>(alloc(t.storage_bytes() + offset_bytes)) + offset_bytes;
  if (t.storage_bytes() > 0) {
    const cudaError_t err = cudaMemcpy(d, t.data(), t.storage_bytes(), cudaMemcpyHostToDevice);
    if (err != cudaSuccess) throw std::runtime_error(std::string("cudaMemcpy: ") + cudaGetErrorString(err));
  }
  return t.view_on(d, Device{DeviceKind::cuda, 0});
}

void download(fa_test::HostTensor& t, const TensorView& dev) {
  if (t.storage_bytes() == 0) return;
  const cudaError_t err = cudaMemcpy(t.data(), dev.data, t.storage_bytes(), cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) throw std::runtime_error(std::string("cudaMemcpy back: ") + cudaGetErrorString(err));
}

GpuRun run_forward(const fa_test::Problem& p, flashattn::Backend backend, cudaStream_t stream) {
  DeviceArena arena;
  GpuRun r;
  r.out = fa_test::alloc_outputs(p, false);  // NaN-poisoned; the poison is uploaded too
  const TensorView out = arena.upload(r.out.out), lse = arena.upload(r.out.lse);
  flashattn::Options opt = p.options(backend, [&](const fa_test::HostTensor& t) { return arena.upload(t); });
  opt.stream = stream;
  const flashattn::Result res =
      flashattn::forward(arena.upload(p.q), arena.upload(p.k), arena.upload(p.v), out, lse, opt);
  r.ran = res.backend;
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) throw std::runtime_error(std::string("kernel: ") + cudaGetErrorString(err));
  download(r.out.out, out);
  download(r.out.lse, lse);
  return r;
}

void expect_forward_matches(const fa_test::Case& c, flashattn::Backend backend) {
  const fa_test::Problem p = fa_test::make_problem(c);
  SCOPED_TRACE(p.describe());
  GpuRun r;
  try {
    r = run_forward(p, backend);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "forward threw: " << e.what();
    return;
  }
  EXPECT_EQ(r.ran, backend);
  const fa_test::Outputs ref = fa_test::run_reference(p, false);
  const bool low = c.dtype != flashattn::DType::f32;
  fa_test::Outputs naive;
  if (low) naive = fa_test::run_naive_low_precision(p, false);
  for (const fa_test::Verdict& v : fa_test::check_outputs(p, r.out, ref, low ? &naive : nullptr, false))
    EXPECT_TRUE(v.ok) << v;
}

fa_test::Case small_case(fa_test::DType dt, int d, std::int64_t sq, std::int64_t sk) {
  fa_test::Case c;
  c.dtype = dt;
  c.head_dim = d;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.batch = 2;
  c.heads_q = 2;
  c.heads_kv = 2;
  return c;
}

void append_layout_and_varlen_cases(std::vector<fa_test::Case>& v) {
  using fa_test::DType;
  fa_test::Case c = small_case(DType::f16, 128, 150, 260);
  c.layout = fa_test::Layout::bhsd;
  v.push_back(c);
  c = small_case(DType::bf16, 128, 0, 0);
  c.varlen_q = {0, 17, 300, 1, 129, 0};
  c.varlen_k = {5, 0, 280, 64, 400, 0};
  c.varlen_pad_rows = 3;
  v.push_back(c);
  c.causal = true;
  v.push_back(c);
  c.causal = false;
  c.window_left = 40;
  c.window_right = 8;
  c.head_dim = 64;
  c.heads_q = 4;
  c.heads_kv = 2;
  v.push_back(c);
}

}  // namespace fa_gpu
