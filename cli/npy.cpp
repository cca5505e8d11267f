#include "npy.hpp"

#include <cctype>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace cli {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

// Parser for the header's Python dict literal: {'descr': '<f4', 'fortran_order':
// False, 'shape': (2, 3), } -- exactly these three keys, nothing else.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  void parse(std::string& descr, bool& fortran, std::vector<std::int64_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    expect('{');
    while (true) {
      skip();
      if (peek() == '}') break;
      const std::string key = string_literal();
      expect(':');
      if (key == "descr") {
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        bad(path_, "unexpected key '" + key + "' in the .npy header");
      }
      skip();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') bad(path_, "malformed .npy header (expected ',' or '}')");
    }
    if (!have_descr || !have_fortran || !have_shape)
      bad(path_, "malformed .npy header (needs 'descr', 'fortran_order' and 'shape')");
  }

 private:
  void skip() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    skip();
    return i_ < s_.size() ? s_[i_] : '\0';
  }
  void expect(char c) {
    if (peek() != c) bad(path_, std::string("malformed .npy header (expected '") + c + "')");
    ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') bad(path_, "malformed .npy header (expected a string)");
    const std::size_t end = s_.find(q, ++i_);
    if (end == std::string::npos) bad(path_, "malformed .npy header (unterminated string)");
    std::string r = s_.substr(i_, end - i_);
    i_ = end + 1;
    return r;
  }
  bool boolean() {
    skip();
    if (s_.compare(i_, 4, "True") == 0) return i_ += 4, true;
    if (s_.compare(i_, 5, "False") == 0) return i_ += 5, false;
    bad(path_, "malformed .npy header (fortran_order must be True or False)");
  }
  std::vector<std::int64_t> tuple() {
    std::vector<std::int64_t> r;
    expect('(');
    while (peek() != ')') {
      if (!std::isdigit(static_cast<unsigned char>(peek()))) bad(path_, "malformed .npy header (bad shape)");
      std::int64_t v = 0;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
        if (v > (std::int64_t(1) << 48)) bad(path_, "shape dimension too large");
        v = v * 10 + (s_[i_++] - '0');
      }
      r.push_back(v);
      if (peek() == ',') ++i_;
      else if (peek() != ')') bad(path_, "malformed .npy header (bad shape)");
    }
    ++i_;
    return r;
  }

  const std::string& s_;
  const std::string& path_;
  std::size_t i_ = 0;
};

DType dtype_from_descr(const std::string& d, const std::string& path) {
  if (d == "<f4") return DType::f32;
  if (d == "<f2") return DType::f16;
  if (d == "<V2" || d == "|V2" || d == "bfloat16") return DType::bf16;
  if (d == "<i4") return DType::i32;
  if (!d.empty() && d[0] == '>') bad(path, "big-endian data ('" + d + "') is not supported; save it little-endian");
  bad(path, "unsupported dtype '" + d + "' (expected float32 '<f4', float16 '<f2', bfloat16 '<V2' or int32 '<i4')");
}

const char* descr_of(DType t) {
  switch (t) {
    case DType::f32: return "<f4";
    case DType::f16: return "<f2";
    case DType::bf16: return "<V2";
    case DType::i32: return "<i4";
  }
  return "?";
}

}  // namespace

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) bad(path, std::string("cannot open: ") + std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) bad(path, "not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | std::size_t(static_cast<unsigned char>(bytes[9])) << 8;
    offset = 10;
  } else if (major == 2) {
    if (bytes.size() < 12) bad(path, "truncated .npy header");
    for (int i = 0; i < 4; ++i) header_len |= std::size_t(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    bad(path, "unsupported .npy format version " + std::to_string(major) + "." +
                  std::to_string(static_cast<unsigned char>(bytes[7])) + " (1.0 and 2.0 are supported)");
  }
  if (bytes.size() < offset + header_len) bad(path, "truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  std::string descr;
  bool fortran = false;
  std::vector<std::int64_t> shape;
  HeaderParser(header, path).parse(descr, fortran, shape);
  if (fortran) bad(path, "fortran_order=True arrays are not supported; save a C-contiguous array (np.ascontiguousarray)");
  if (shape.size() > 4) bad(path, "rank " + std::to_string(shape.size()) + " is more than 4");
  Tensor t(dtype_from_descr(descr, path), shape);
  const std::size_t data = offset + header_len;
  if (bytes.size() - data != t.bytes.size())
    bad(path, "holds " + std::to_string(bytes.size() - data) + " data bytes, but shape " + shape_string(shape) +
                  " of " + descr + " needs " + std::to_string(t.bytes.size()));
  std::memcpy(t.bytes.data(), bytes.data() + data, t.bytes.size());
  return t;
}

void write_npy(const std::string& path, const Tensor& t) {
  std::string dict = std::string("{'descr': '") + descr_of(t.dtype) + "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < t.shape.size(); ++i) dict += std::to_string(t.shape[i]) + (t.shape.size() == 1 ? "," : i + 1 < t.shape.size() ? ", " : "");
  dict += "), }";
  // Pad with spaces so that the data starts on a 64-byte boundary; the header ends in '\n'.
  const bool v2 = dict.size() + 1 + 10 > 65535;
  const std::size_t prefix = v2 ? 12 : 10;
  const std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += char(v2 ? 2 : 1);
  out += char(0);
  const std::size_t len = dict.size();
  for (int i = 0; i < (v2 ? 4 : 2); ++i) out += char((len >> (8 * i)) & 0xff);
  out += dict;
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  f.write(out.data(), std::streamsize(out.size()));
  f.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
  if (!f) throw std::runtime_error(path + ": write failed");
}

}  // namespace cli
