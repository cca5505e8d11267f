// The subcommands of the flashattn tool and the helpers they share.
#pragma once
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "problem.hpp"

namespace cli {

// Each add_* registers a subcommand and returns what to run when it was chosen;
// the returned function gives the process exit code.
using Command = std::function<int()>;
Command add_run(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_check(CLI::App& app);
Command add_info(CLI::App& app);

// Names accepted on the command line.
DType parse_dtype(const std::string& s);  // fp32, fp16, bf16 (and float32, float16, bfloat16)
const char* short_dtype(DType t);         // fp32, fp16, bf16
Backend parse_backend(const std::string& s);
Alignment parse_alignment(const std::string& s);
// "L,R" with each >= -1.
void parse_window(const std::string& s, std::int64_t& left, std::int64_t& right);

bool cuda_available();  // some CUDA backend can run on this machine
// --device {auto,cpu,cuda} and --backend together: where the problem lives.
Device choose_device(const std::string& device, Backend backend);
// "cpu: <model>, N threads" or "cuda:0: <name>".
std::string describe_device(Device d, int threads);
int effective_threads(int threads);

// "12.3 GFLOP/s" or "1.23 TFLOP/s".
std::string flops_rate(double flops, double ms);
double median(std::vector<double> v);
std::string fmt(const char* format, double v);

// A one-line error with a non-zero exit, used for bad arguments found after parsing.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace cli
