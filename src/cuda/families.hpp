// What each CUDA kernel family exposes to dispatch.cu. unsupported_* returns null
// when the family can run the call, otherwise a short reason.
#pragma once
#include "params.hpp"

namespace flashattn::detail::cuda {

const char* portable_unsupported(const ForwardParams& p, bool backward);
void portable_forward(const ForwardParams& p);
void portable_backward(const BackwardParams& p);
// The backward half of portable_unsupported (owned by the backward kernel).
const char* portable_backward_unsupported(const ForwardParams& p);

const char* sm80_unsupported(const ForwardParams& p, bool backward);
void sm80_forward(const ForwardParams& p);
void sm80_backward(const BackwardParams& p);
// The backward half of sm80_unsupported (owned by the backward kernel).
const char* sm80_backward_unsupported(const ForwardParams& p);
// The sm80 deterministic dQ pass alone (dQ written directly from q, k, v, dout, lse
// and D = `dsum`); the sm90 backward uses it in deterministic mode.
void sm80_deterministic_dq(const BackwardParams& p, const float* dsum);

const char* sm90_unsupported(const ForwardParams& p, bool backward);
void sm90_forward(const ForwardParams& p);
void sm90_backward(const BackwardParams& p);
// The backward half of sm90_unsupported (owned by the backward kernel).
const char* sm90_backward_unsupported(const ForwardParams& p);

// Compute capability (major*10 + minor) of the current device, cached per device.
int current_device_arch();

}  // namespace flashattn::detail::cuda
