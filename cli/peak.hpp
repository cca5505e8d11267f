// An estimate of the CPU's fp32 FMA peak, for `bench`'s "fraction of peak".
#pragma once
#include <string>

namespace cli {

struct Peak {
  double gflops = 0;
  std::string basis;  // how it was obtained, printed next to the figures
};

// cores x max clock x FLOP/cycle, where FLOP/cycle = 2 FMA pipes x vector lanes x 2
// (64 with AVX-512 on Intel and AMD Zen 5, 32 on Zen 4, which splits 512-bit FMAs
// into two 256-bit halves, and 32 with AVX2). `override_gflops` > 0 wins.
Peak cpu_fp32_peak(int threads, double override_gflops);

}  // namespace cli
