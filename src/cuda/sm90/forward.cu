// Placeholder: the Hopper wgmma/TMA forward kernel lands with issue P5.
#include "cuda/families.hpp"
namespace flashattn::detail::cuda {
const char* sm90_unsupported(const ForwardParams&, bool) { return "not implemented yet"; }
void sm90_forward(const ForwardParams&) {}
}  // namespace flashattn::detail::cuda
