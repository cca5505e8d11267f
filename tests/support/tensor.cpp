// HostTensor: strided host storage with element access in logical order.
#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "half.hpp"
#include "support.hpp"

namespace fa_test {

namespace fd = flashattn::detail;

HostTensor HostTensor::make(DType dtype, std::vector<std::int64_t> shape, std::vector<int> order,
                            std::int64_t pad) {
  const int rank = int(shape.size());
  if (rank < 1 || rank > flashattn::kMaxRank) throw std::invalid_argument("HostTensor: bad rank");
  if (order.empty()) {
    order.resize(std::size_t(rank));
    std::iota(order.begin(), order.end(), 0);
  }
  if (int(order.size()) != rank) throw std::invalid_argument("HostTensor: order/shape rank differ");
  HostTensor t;
  t.view.dtype = dtype;
  t.view.rank = rank;
  std::int64_t stride = 1;
  for (int m = rank - 1; m >= 0; --m) {
    const int d = order[std::size_t(m)];
    t.view.shape[d] = shape[std::size_t(d)];
    t.view.strides[d] = stride;
    std::int64_t extent = std::max<std::int64_t>(shape[std::size_t(d)], 1);
    if (m == rank - 1 && rank > 1) extent += pad;  // gap after each innermost run
    stride *= extent;
  }
  // Everything the strides can reach; at least one element so data is never null.
  std::int64_t span = 1;
  for (int d = 0; d < rank; ++d)
    if (t.view.shape[d] > 0) span += (t.view.shape[d] - 1) * t.view.strides[d];
  bool empty = false;
  for (int d = 0; d < rank; ++d) empty |= t.view.shape[d] == 0;
  t.storage_elems_ = empty ? 1 : span;
  t.owned_.assign(std::size_t(t.storage_elems_) * flashattn::dtype_size(dtype), 0);
  t.rebase();
  return t;
}

HostTensor HostTensor::wrap(void* data, DType dtype, std::vector<std::int64_t> shape,
                            std::vector<std::int64_t> strides) {
  HostTensor t;
  t.view.data = data;
  t.view.dtype = dtype;
  t.view.rank = int(shape.size());
  std::int64_t span = 1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    t.view.shape[d] = shape[d];
    t.view.strides[d] = strides[d];
    if (shape[d] > 0) span += (shape[d] - 1) * strides[d];
  }
  t.storage_elems_ = span;
  return t;
}

void HostTensor::rebase() {
  if (!owned_.empty()) view.data = owned_.data();
}

HostTensor::HostTensor(const HostTensor& o) : view(o.view), owned_(o.owned_), storage_elems_(o.storage_elems_) {
  rebase();
}
HostTensor::HostTensor(HostTensor&& o) noexcept
    : view(o.view), owned_(std::move(o.owned_)), storage_elems_(o.storage_elems_) {
  rebase();
  o.view = {};
  o.storage_elems_ = 0;
}
HostTensor& HostTensor::operator=(const HostTensor& o) {
  if (this != &o) {
    view = o.view;
    owned_ = o.owned_;
    storage_elems_ = o.storage_elems_;
    rebase();
  }
  return *this;
}
HostTensor& HostTensor::operator=(HostTensor&& o) noexcept {
  if (this != &o) {
    view = o.view;
    owned_ = std::move(o.owned_);
    storage_elems_ = o.storage_elems_;
    rebase();
    o.view = {};
    o.storage_elems_ = 0;
  }
  return *this;
}

flashattn::TensorView HostTensor::view_on(void* ptr, flashattn::Device device) const {
  flashattn::TensorView v = view;
  v.data = ptr;
  v.device = device;
  return v;
}

std::int64_t HostTensor::offset_of(std::int64_t flat) const {
  std::int64_t off = 0;
  for (int d = view.rank - 1; d >= 0; --d) {
    const std::int64_t n = view.shape[d];
    off += (flat % n) * view.strides[d];
    flat /= n;
  }
  return off;
}

std::int64_t HostTensor::offset_of(std::initializer_list<std::int64_t> index) const {
  std::int64_t off = 0;
  int d = 0;
  for (std::int64_t i : index) off += i * view.strides[d++];
  return off;
}

float HostTensor::get(std::int64_t flat) const {
  const std::int64_t off = offset_of(flat);
  if (view.dtype == DType::i32) return float(static_cast<const std::int32_t*>(view.data)[off]);
  return fd::load_as_float(view.data, view.dtype, off);
}

float HostTensor::at(std::initializer_list<std::int64_t> index) const {
  const std::int64_t off = offset_of(index);
  if (view.dtype == DType::i32) return float(static_cast<const std::int32_t*>(view.data)[off]);
  return fd::load_as_float(view.data, view.dtype, off);
}

void HostTensor::set(std::int64_t flat, float x) {
  const std::int64_t off = offset_of(flat);
  if (view.dtype == DType::i32)
    static_cast<std::int32_t*>(view.data)[off] = std::int32_t(x);
  else
    fd::store_from_float(view.data, view.dtype, off, x);
}

std::vector<float> HostTensor::to_float_vector() const {
  std::vector<float> r(static_cast<std::size_t>(numel()));
  for (std::int64_t i = 0; i < numel(); ++i) r[std::size_t(i)] = get(i);
  return r;
}

void HostTensor::poison() {
  if (view.data == nullptr) return;
  switch (view.dtype) {
    case DType::f32: {
      auto* p = static_cast<float*>(view.data);
      std::fill(p, p + storage_elems_, std::numeric_limits<float>::quiet_NaN());
      break;
    }
    case DType::f16: {
      auto* p = static_cast<std::uint16_t*>(view.data);
      std::fill(p, p + storage_elems_, std::uint16_t(0x7e00));
      break;
    }
    case DType::bf16: {
      auto* p = static_cast<std::uint16_t*>(view.data);
      std::fill(p, p + storage_elems_, std::uint16_t(0x7fc0));
      break;
    }
    case DType::i32: {
      auto* p = static_cast<std::int32_t*>(view.data);
      std::fill(p, p + storage_elems_, 0x7fffffff);
      break;
    }
  }
}

HostTensor HostTensor::to_f32() const {
  HostTensor t;
  t.view = view;
  t.view.dtype = DType::f32;
  t.storage_elems_ = storage_elems_;
  t.owned_.assign(std::size_t(storage_elems_) * 4, 0);
  t.rebase();
  // Convert the whole storage so gaps (and NaN poison) carry over as well.
  for (std::int64_t i = 0; i < storage_elems_; ++i)
    static_cast<float*>(t.view.data)[i] =
        view.dtype == DType::i32 ? float(static_cast<const std::int32_t*>(view.data)[i])
                                 : fd::load_as_float(view.data, view.dtype, i);
  return t;
}

}  // namespace fa_test
