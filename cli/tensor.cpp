#include "tensor.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#if FLASHATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace cli {

float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = std::uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return std::uint16_t(bits >> 16);
}

float fp16_to_float(std::uint16_t h) {
  // Every fp16 value is exactly sign * mant * 2^(exp-25) with the hidden bit.
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  float v;
  if (exp == 0x1f)
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else if (exp == 0)
    v = std::ldexp(float(mant), -24);
  else
    v = std::ldexp(float(mant | 0x400), exp - 25);
  return (h & 0x8000) ? -v : v;
}

std::uint16_t float_to_fp16(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const float a = std::fabs(f);
  if (std::isnan(f)) return 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  if (a < std::ldexp(1.0f, -14)) {           // subnormal: units of 2^-24
    const float m = std::nearbyint(a * std::ldexp(1.0f, 24));  // ties to even (default mode)
    return sign | std::uint16_t(m);
  }
  int e;
  std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // 11 significant bits: units of 2^(e-11).
  float m = std::nearbyint(std::ldexp(a, 11 - e));
  if (m >= 2048.0f) {
    m /= 2;
    ++e;
  }
  const int biased = e - 1 + 15;
  if (biased >= 31) return sign | 0x7c00;
  return sign | std::uint16_t(biased << 10) | (std::uint16_t(m) & 0x3ff);
}

float round_to(DType t, float x) {
  switch (t) {
    case DType::bf16: return bf16_to_float(float_to_bf16(x));
    case DType::f16: return fp16_to_float(float_to_fp16(x));
    default: return x;
  }
}

Tensor::Tensor(DType t, std::vector<std::int64_t> s) : dtype(t), shape(std::move(s)) {
  bytes.resize(std::size_t(numel()) * flashattn::dtype_size(t));
}

std::int64_t Tensor::numel() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

float Tensor::get(std::int64_t i) const {
  switch (dtype) {
    case DType::f16: return fp16_to_float(reinterpret_cast<const std::uint16_t*>(bytes.data())[i]);
    case DType::bf16: return bf16_to_float(reinterpret_cast<const std::uint16_t*>(bytes.data())[i]);
    case DType::i32: return float(reinterpret_cast<const std::int32_t*>(bytes.data())[i]);
    default: return reinterpret_cast<const float*>(bytes.data())[i];
  }
}

void Tensor::set(std::int64_t i, float x) {
  switch (dtype) {
    case DType::f16: reinterpret_cast<std::uint16_t*>(bytes.data())[i] = float_to_fp16(x); break;
    case DType::bf16: reinterpret_cast<std::uint16_t*>(bytes.data())[i] = float_to_bf16(x); break;
    case DType::i32: reinterpret_cast<std::int32_t*>(bytes.data())[i] = std::int32_t(x); break;
    default: reinterpret_cast<float*>(bytes.data())[i] = x;
  }
}

TensorView Tensor::view() const {
  TensorView v;
  v.data = const_cast<unsigned char*>(bytes.data());
  v.dtype = dtype;
  v.rank = int(shape.size());
  std::int64_t stride = 1;
  for (int i = v.rank - 1; i >= 0; --i) {
    v.shape[i] = shape[i];
    v.strides[i] = stride;
    stride *= shape[i];
  }
  return v;
}

Tensor Tensor::to(DType t) const {
  Tensor r(t, shape);
  if (t == dtype) {
    r.bytes = bytes;
    return r;
  }
  for (std::int64_t i = 0; i < numel(); ++i) r.set(i, get(i));
  return r;
}

std::string shape_string(const std::vector<std::int64_t>& s) {
  std::ostringstream o;
  o << '(';
  for (std::size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ')';
  return o.str();
}

void fill_normal(Tensor& t, std::mt19937_64& rng, float stddev) {
  // Box-Muller on 64-bit draws: two normals per draw pair, much faster than
  // std::normal_distribution for the 10^8-element tensors of a benchmark.
  const std::int64_t n = t.numel();
  constexpr double kTwoPi = 6.283185307179586;
  for (std::int64_t i = 0; i < n; i += 2) {
    const double u1 = (double(rng() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = double(rng() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    t.set(i, float(r * std::cos(kTwoPi * u2)));
    if (i + 1 < n) t.set(i + 1, float(r * std::sin(kTwoPi * u2)));
  }
}

// ---------------------------------------------------------------------------
// Placement

#if FLASHATTN_WITH_CUDA
namespace {
void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw flashattn::Error(flashattn::ErrorCode::cuda_error,
                           std::string(what) + ": " + cudaGetErrorString(e));
}
}  // namespace
#endif

Placement::Placement(Device device) : device_(device) {
#if FLASHATTN_WITH_CUDA
  if (device.kind == flashattn::DeviceKind::cuda) cuda_check(cudaSetDevice(device.index), "cudaSetDevice");
#else
  if (device.kind == flashattn::DeviceKind::cuda)
    throw flashattn::Error(flashattn::ErrorCode::device_mismatch,
                           "device: this flashattn was built without CUDA");
#endif
}

Placement::~Placement() {
#if FLASHATTN_WITH_CUDA
  for (void* p : owned_) cudaFree(p);
#endif
}

TensorView Placement::put(const Tensor& t) {
  TensorView v = t.view();
  v.device = device_;
  if (device_.kind == flashattn::DeviceKind::cpu) return v;
#if FLASHATTN_WITH_CUDA
  void* p = nullptr;
  cuda_check(cudaMalloc(&p, t.bytes.size() ? t.bytes.size() : 1), "cudaMalloc");
  owned_.push_back(p);
  cuda_check(cudaMemcpy(p, t.bytes.data(), t.bytes.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
  v.data = p;
#endif
  return v;
}

TensorView Placement::output(const Tensor& t) {
  TensorView v = t.view();
  v.device = device_;
#if FLASHATTN_WITH_CUDA
  if (device_.kind == flashattn::DeviceKind::cuda) {
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, t.bytes.size() ? t.bytes.size() : 1), "cudaMalloc");
    owned_.push_back(p);
    v.data = p;
  }
#endif
  poison(v);
  return v;
}

void Placement::poison(const TensorView& v) {
  std::int64_t n = 1;
  for (int i = 0; i < v.rank; ++i) n *= v.shape[i];
  const std::size_t bytes = std::size_t(n) * flashattn::dtype_size(v.dtype);
  if (device_.kind == flashattn::DeviceKind::cpu) {
    std::memset(v.data, 0xff, bytes);
    return;
  }
#if FLASHATTN_WITH_CUDA
  cuda_check(cudaMemset(v.data, 0xff, bytes), "cudaMemset");
#endif
}

void Placement::get(const TensorView& v, Tensor& t) {
  if (v.data == t.data()) return;
#if FLASHATTN_WITH_CUDA
  cuda_check(cudaMemcpy(t.data(), v.data, t.bytes.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
#endif
}

void Placement::synchronize() {
#if FLASHATTN_WITH_CUDA
  if (device_.kind == flashattn::DeviceKind::cuda) cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
#endif
}

// ---------------------------------------------------------------------------
// Machine description

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto c = line.find(':');
      if (c != std::string::npos) return line.substr(line.find_first_not_of(" \t", c + 1));
    }
  }
  return "unknown CPU";
}

int cpu_physical_cores() {
  // Distinct (physical id, core id) pairs: hyperthreads share FMA units.
  std::ifstream f("/proc/cpuinfo");
  std::string line, phys = "0";
  std::set<std::pair<std::string, std::string>> cores;
  while (std::getline(f, line)) {
    const auto c = line.find(':');
    if (c == std::string::npos) continue;
    const std::string value = c + 2 <= line.size() ? line.substr(c + 2) : "";
    if (line.rfind("physical id", 0) == 0) phys = value;
    if (line.rfind("core id", 0) == 0) cores.insert({phys, value});
  }
  if (!cores.empty()) return int(cores.size());
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

int gpu_count() {
#if FLASHATTN_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

std::string gpu_name(int index) {
#if FLASHATTN_WITH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) == cudaSuccess) {
    std::ostringstream o;
    o << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount << " SMs, "
      << (prop.totalGlobalMem >> 30) << " GiB)";
    return o.str();
  }
#endif
  return "GPU " + std::to_string(index);
}

// ---------------------------------------------------------------------------
// Timer

Timer::Timer(Device device) : device_(device) {
#if FLASHATTN_WITH_CUDA
  if (device.kind == flashattn::DeviceKind::cuda) {
    cudaEvent_t a, b;
    cuda_check(cudaEventCreate(&a), "cudaEventCreate");
    cuda_check(cudaEventCreate(&b), "cudaEventCreate");
    start_event_ = a;
    stop_event_ = b;
  }
#endif
}

Timer::~Timer() {
#if FLASHATTN_WITH_CUDA
  if (start_event_) cudaEventDestroy(static_cast<cudaEvent_t>(start_event_));
  if (stop_event_) cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_));
#endif
}

namespace {
double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void Timer::start() {
#if FLASHATTN_WITH_CUDA
  if (start_event_) {
    cuda_check(cudaEventRecord(static_cast<cudaEvent_t>(start_event_), nullptr), "cudaEventRecord");
    return;
  }
#endif
  t0_ = now_ms();
}

double Timer::stop_ms() {
#if FLASHATTN_WITH_CUDA
  if (stop_event_) {
    auto a = static_cast<cudaEvent_t>(start_event_), b = static_cast<cudaEvent_t>(stop_event_);
    cuda_check(cudaEventRecord(b, nullptr), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    return ms;
  }
#endif
  return now_ms() - t0_;
}

}  // namespace cli
