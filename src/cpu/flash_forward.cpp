// Placeholder until the FlashAttention-2 CPU forward lands.
#include "backends.hpp"
namespace flashattn::detail::cpu {
void flash_forward(const ForwardParams& p) { reference_forward(p); }
}  // namespace flashattn::detail::cpu
