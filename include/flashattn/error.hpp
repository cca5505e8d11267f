#pragma once
#include <stdexcept>
#include <string>

namespace flashattn {

enum class ErrorCode {
  invalid_argument,   // a value outside its allowed range (window, scale, softcap, ...)
  shape_mismatch,     // shapes disagree with each other or with the layout
  dtype_mismatch,     // dtypes disagree or are unsupported for the argument
  null_pointer,       // a required tensor has no data
  bad_stride,         // the head-dim stride is not 1, or a stride is negative
  device_mismatch,    // tensors on different devices, or on a device with no backend
  overflow,           // element offsets would not fit in 64 bits
  unsupported,        // valid request that no available backend implements
  cuda_error,         // the CUDA runtime reported a failure
};

const char* error_code_name(ErrorCode code);

// Every failure the library reports is one of these; what() names the argument.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace flashattn
