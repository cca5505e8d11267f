// Placeholder: the portable SIMT backward kernel lands with issue P4.
#include "cuda/families.hpp"
namespace flashattn::detail::cuda {
void portable_backward(const BackwardParams&) {}
}  // namespace flashattn::detail::cuda
