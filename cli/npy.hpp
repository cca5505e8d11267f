// A small, strict reader and writer of NumPy .npy files (format versions 1.0 and
// 2.0): little-endian, C order, dtypes float32 ('<f4'), float16 ('<f2'), int32
// ('<i4') and bfloat16 (ml_dtypes saves it as the 2-byte void '<V2'; 'bfloat16'
// is accepted too). Anything else is rejected with a message naming the file.
#pragma once
#include <string>

#include "tensor.hpp"

namespace cli {

Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const Tensor& t);

}  // namespace cli
