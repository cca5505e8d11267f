// Placeholder: the portable SIMT forward kernel lands with issue P3.
#include "cuda/families.hpp"
namespace flashattn::detail::cuda {
const char* portable_unsupported(const ForwardParams&, bool backward) {
  return backward ? "not implemented yet" : "not implemented yet";
}
void portable_forward(const ForwardParams&) {}
}  // namespace flashattn::detail::cuda
