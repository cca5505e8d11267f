// `flashattn info`: version, backends, devices and the CPU's SIMD targets.
#include <hwy/targets.h>

#include <iostream>
#include <memory>

#include "commands.hpp"

namespace cli {

namespace {

int info(int threads) {
  std::cout << "flashattn " << flashattn::kVersion << "\n"
            << "  build     CUDA backends " << (FLASHATTN_WITH_CUDA ? "compiled in" : "not compiled (CPU-only build)")
            << "\n"
            << "  cpu       " << cpu_model() << ", " << cpu_physical_cores() << " physical cores, "
            << effective_threads(threads) << " threads by default\n";
  // Highway's targets, best first: what its runtime dispatch can choose on this CPU.
  std::cout << "  cpu simd  ";
  const std::int64_t targets = hwy::SupportedTargets();
  bool first = true;
  for (int bit = 0; bit < 63; ++bit) {
    const std::int64_t t = std::int64_t(1) << bit;
    if (!(targets & t)) continue;
    std::cout << (first ? "" : ", ") << hwy::TargetName(t);
    first = false;
  }
  std::cout << (first ? "none" : "") << " (best first)\n";
  const int gpus = gpu_count();
  std::cout << "  gpus      " << gpus << "\n";
  for (int i = 0; i < gpus; ++i) std::cout << "    cuda:" << i << "  " << gpu_name(i) << "\n";
  std::cout << "  backends\n";
  for (Backend b : {Backend::cpu_reference, Backend::cpu_flash, Backend::cuda_portable, Backend::cuda_sm80,
                    Backend::cuda_sm90})
    std::cout << "    " << flashattn::backend_name(b)
              << std::string(15 - std::string(flashattn::backend_name(b)).size(), ' ')
              << (flashattn::backend_available(b) ? "available" : "not available") << "\n";
  std::cout << "  default device for run/bench/check: " << (cuda_available() ? "cuda" : "cpu") << "\n";
  return 0;
}

}  // namespace

Command add_info(CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  CLI::App* c = app.add_subcommand("info", "Show the version, the backends available here, devices and CPU SIMD targets");
  c->add_option("--threads", *threads, "CPU threads to report (0 = all cores)");
  return [threads] { return info(*threads); };
}

}  // namespace cli
