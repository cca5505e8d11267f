// Host tensors for the CLI: contiguous buffers of any flashattn dtype, element
// access as float, random fill, and placement on the device a command runs on.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "flashattn/flashattn.hpp"

namespace cli {

using flashattn::Device;
using flashattn::DType;
using flashattn::TensorView;

// fp16/bf16 <-> fp32, round to nearest even (the CLI may not use the library's
// private helpers, and these are small).
float bf16_to_float(std::uint16_t h);
std::uint16_t float_to_bf16(float f);
float fp16_to_float(std::uint16_t h);
std::uint16_t float_to_fp16(float f);
// x rounded to dtype t and back (identity for fp32).
float round_to(DType t, float x);

// A contiguous (row-major) host tensor.
struct Tensor {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;

  Tensor() = default;
  Tensor(DType t, std::vector<std::int64_t> s);
  std::int64_t numel() const;
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  float get(std::int64_t i) const;
  void set(std::int64_t i, float x);
  // A view of this host buffer (contiguous strides).
  TensorView view() const;
  Tensor to(DType t) const;  // converted copy
};

// Shape as "(2, 16, 2048, 128)".
std::string shape_string(const std::vector<std::int64_t>& s);

// Normal(0, 1) values, rounded to the tensor's dtype. Fast enough for 10^8 elements.
void fill_normal(Tensor& t, std::mt19937_64& rng, float stddev = 1.0f);

// Where tensors live for one command. On CPU, views point at the host tensors; on
// CUDA, device copies are made (and freed with this object).
class Placement {
 public:
  explicit Placement(Device device);
  ~Placement();
  Placement(const Placement&) = delete;
  Placement& operator=(const Placement&) = delete;

  Device device() const { return device_; }
  // A view of t on the device (copied there on CUDA).
  TensorView put(const Tensor& t);
  // An output buffer shaped like t, filled with NaN bits (0xFF bytes) so that
  // anything the backend fails to write shows up.
  TensorView output(const Tensor& t);
  void poison(const TensorView& v);
  // Copies a device view back into t (same shape and dtype).
  void get(const TensorView& v, Tensor& t);
  void synchronize();

 private:
  Device device_;
  std::vector<void*> owned_;
};

// Name of the CPU (from /proc/cpuinfo) and, when built with CUDA, of a GPU.
std::string cpu_model();
int cpu_physical_cores();
std::string gpu_name(int index);
int gpu_count();

// Seconds of one call, timed on the device's clock (CUDA events on a GPU).
class Timer {
 public:
  explicit Timer(Device device);
  ~Timer();
  void start();
  double stop_ms();

 private:
  Device device_;
  void* start_event_ = nullptr;
  void* stop_event_ = nullptr;
  double t0_ = 0;
};

}  // namespace cli
