#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "commands.hpp"

namespace cli {

DType parse_dtype(const std::string& s) {
  if (s == "fp32" || s == "float32") return DType::f32;
  if (s == "fp16" || s == "float16") return DType::f16;
  if (s == "bf16" || s == "bfloat16") return DType::bf16;
  throw UsageError("--dtype: expected fp32, fp16 or bf16, got '" + s + "'");
}

const char* short_dtype(DType t) {
  switch (t) {
    case DType::f32: return "fp32";
    case DType::f16: return "fp16";
    case DType::bf16: return "bf16";
    default: return "i32";
  }
}

Backend parse_backend(const std::string& s) {
  for (Backend b : {Backend::automatic, Backend::cpu_reference, Backend::cpu_flash, Backend::cuda_portable,
                    Backend::cuda_sm80, Backend::cuda_sm90})
    if (s == flashattn::backend_name(b)) return b;
  if (s == "auto") return Backend::automatic;
  throw UsageError("--backend: expected auto, cpu_reference, cpu_flash, cuda_portable, cuda_sm80 or cuda_sm90, got '" +
                   s + "'");
}

Alignment parse_alignment(const std::string& s) {
  if (s == "bottom-right") return Alignment::bottom_right;
  if (s == "top-left") return Alignment::top_left;
  throw UsageError("--alignment: expected bottom-right or top-left, got '" + s + "'");
}

void parse_window(const std::string& s, std::int64_t& left, std::int64_t& right) {
  long long l = 0, r = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "%lld,%lld%c", &l, &r, &tail) != 2 || l < -1 || r < -1)
    throw UsageError("--window: expected L,R with L, R >= -1 (-1 = unbounded), got '" + s + "'");
  left = l;
  right = r;
}

bool cuda_available() {
  return flashattn::backend_available(Backend::cuda_portable) || flashattn::backend_available(Backend::cuda_sm80) ||
         flashattn::backend_available(Backend::cuda_sm90);
}

Device choose_device(const std::string& device, Backend backend) {
  const bool cpu_backend = backend == Backend::cpu_reference || backend == Backend::cpu_flash;
  const bool cuda_backend = backend != Backend::automatic && !cpu_backend;
  Device d;
  if (device == "cpu") {
    if (cuda_backend) throw UsageError(std::string("--backend ") + flashattn::backend_name(backend) + " does not run on --device cpu");
    return d;
  }
  if (device == "cuda" || (device == "auto" && (cuda_backend || (!cpu_backend && cuda_available())))) {
    if (cpu_backend) throw UsageError(std::string("--backend ") + flashattn::backend_name(backend) + " does not run on --device cuda");
    if (!cuda_available())
      throw UsageError("--device cuda: no CUDA backend is available (no GPU, or this flashattn was built without CUDA)");
    d.kind = flashattn::DeviceKind::cuda;
    return d;
  }
  if (device != "auto") throw UsageError("--device: expected auto, cpu or cuda, got '" + device + "'");
  return d;
}

int effective_threads(int threads) {
  if (threads > 0) return threads;
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

std::string describe_device(Device d, int threads) {
  if (d.kind == flashattn::DeviceKind::cuda) return "cuda:" + std::to_string(d.index) + ": " + gpu_name(d.index);
  return "cpu: " + cpu_model() + ", " + std::to_string(effective_threads(threads)) + " threads";
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string flops_rate(double flops, double ms) {
  if (!(ms > 0)) return "-";
  const double g = flops / (ms * 1e6);
  return g >= 1000 ? fmt("%.1f TFLOP/s", g / 1000) : fmt("%.2f GFLOP/s", g);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace cli
