#include "peak.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "commands.hpp"

namespace cli {

namespace {
std::string cpuinfo_field(const std::string& key) {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) {
      const auto c = line.find(':');
      return c == std::string::npos || c + 2 > line.size() ? "" : line.substr(c + 2);
    }
  return "";
}

double max_ghz() {
  std::ifstream f("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq");  // kHz
  double khz = 0;
  if (f >> khz && khz > 0) return khz / 1e6;
  const std::string mhz = cpuinfo_field("cpu MHz");  // current clock: a fallback only
  return mhz.empty() ? 0 : std::stod(mhz) / 1000;
}
}  // namespace

Peak cpu_fp32_peak(int threads, double override_gflops) {
  Peak p;
  if (override_gflops > 0) {
    p.gflops = override_gflops;
    p.basis = fmt("%.0f GFLOP/s fp32 FMA peak (--peak-gflops)", override_gflops);
    return p;
  }
  const std::string flags = " " + cpuinfo_field("flags") + " ";
  const bool avx512 = flags.find(" avx512f ") != std::string::npos;
  const bool avx2 = flags.find(" avx2 ") != std::string::npos && flags.find(" fma ") != std::string::npos;
  const bool amd = cpuinfo_field("vendor_id") == "AuthenticAMD";
  const std::string fam = cpuinfo_field("cpu family");
  const int family = fam.empty() ? 0 : std::stoi(fam);
  int per_cycle = 16;  // SSE: 2 pipes x 4 lanes x 2
  std::string why = "SSE";
  if (avx512 && !(amd && family < 0x1a)) per_cycle = 64, why = "AVX-512, 2 FMA pipes";
  else if (avx512) per_cycle = 32, why = "AVX-512 on Zen 4 (256-bit datapath)";
  else if (avx2) per_cycle = 32, why = "AVX2, 2 FMA pipes";
  const int cores = std::min(cpu_physical_cores(), effective_threads(threads));
  const double ghz = max_ghz();
  if (ghz <= 0) {
    p.basis = "unknown (no clock found); pass --peak-gflops";
    return p;
  }
  p.gflops = cores * ghz * per_cycle;
  std::ostringstream o;
  o << "estimate " << fmt("%.0f", p.gflops) << " GFLOP/s fp32 = " << cores << " cores x " << fmt("%.2f", ghz)
    << " GHz x " << per_cycle << " FLOP/cycle (" << why << "); pass --peak-gflops for the measured figure";
  p.basis = o.str();
  return p;
}

}  // namespace cli
