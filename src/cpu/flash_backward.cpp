// Placeholder until the FlashAttention-2 CPU backward lands.
#include "backends.hpp"
namespace flashattn::detail::cpu {
void flash_backward(const BackwardParams& p) { reference_backward(p); }
}  // namespace flashattn::detail::cpu
