// Non-owning tensor views: the only way data crosses the public API.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace flashattn {

// i32 is only for index tensors (cu_seqlens).
enum class DType : std::uint8_t { f32, f16, bf16, i32 };
enum class DeviceKind : std::uint8_t { cpu, cuda };

constexpr std::size_t dtype_size(DType t) {
  return (t == DType::f32 || t == DType::i32) ? 4 : 2;
}
const char* dtype_name(DType t);

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  // CUDA ordinal; ignored on CPU
  friend bool operator==(const Device& a, const Device& b) { return a.kind == b.kind && a.index == b.index; }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

inline constexpr int kMaxRank = 4;

// A strided view of memory the caller owns. Shapes and strides are in elements.
// Strides may be zero (broadcast) only where documented (the bias).
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  Device device{};
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::array<std::int64_t, kMaxRank> strides{};

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool defined() const { return rank > 0 || data != nullptr; }
};

// A view with row-major (C-contiguous) strides.
TensorView contiguous_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                           Device device = {});
// A view with explicit strides (elements).
TensorView strided_view(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
                        std::initializer_list<std::int64_t> strides, Device device = {});

}  // namespace flashattn
