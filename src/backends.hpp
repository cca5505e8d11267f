// The backends behind the single dispatch point in api.cpp. Each may assume its
// parameters were validated and that it supports the call (see supports_* below).
#pragma once
#include "flashattn/attention.hpp"
#include "params.hpp"

namespace flashattn::detail {

namespace cpu {
void reference_forward(const ForwardParams& p);
void reference_backward(const BackwardParams& p);
void flash_forward(const ForwardParams& p);
void flash_backward(const BackwardParams& p);
}  // namespace cpu

#if FLASHATTN_WITH_CUDA
namespace cuda {
// Null when supported; otherwise why not.
const char* unsupported_reason(Backend b, const ForwardParams& p, bool backward);
bool available(Backend b);
// Checks that every pointer in p lives on `device` and meets the kernels' alignment.
void check_pointers(const ForwardParams& p, int device, bool backward);
// Runs on `device` (the tensors' CUDA ordinal), restoring the caller's current device.
void forward(Backend b, const ForwardParams& p, int device);
void backward(Backend b, const BackwardParams& p, int device);
}  // namespace cuda
#endif

}  // namespace flashattn::detail
