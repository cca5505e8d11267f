// Calls the installed library through its public header only, and checks one
// output row by hand so a broken install cannot pass silently.
#include <cmath>
#include <cstdio>
#include <vector>

#include <flashattn/flashattn.hpp>

int main() {
  const int s = 4, d = 8;
  std::vector<float> q(s * d), k(s * d), v(s * d), out(s * d, NAN), lse(s, NAN);
  for (int i = 0; i < s * d; ++i) {
    q[i] = std::sin(0.3f * i);
    k[i] = std::cos(0.7f * i);
    v[i] = 0.1f * float(i % 11);
  }
  using flashattn::DType;
  auto view = [&](std::vector<float>& x) { return flashattn::contiguous_view(x.data(), DType::f32, {1, s, 1, d}); };
  flashattn::Options opt;
  opt.causal = true;
  const flashattn::Result r =
      flashattn::forward(view(q), view(k), view(v), view(out), flashattn::contiguous_view(lse.data(), DType::f32, {1, 1, s}), opt);
  // Row 0 under a causal mask sees only key 0: O[0] == V[0], lse[0] == q0.k0 / sqrt(d).
  double dot = 0;
  for (int c = 0; c < d; ++c) dot += double(q[c]) * k[c];
  bool ok = std::fabs(lse[0] - dot / std::sqrt(double(d))) < 1e-5;
  for (int c = 0; c < d; ++c) ok = ok && std::fabs(out[c] - v[c]) < 1e-6;
  for (float x : out) ok = ok && std::isfinite(x);
  std::printf("flashattn %s via %s: %s\n", flashattn::kVersion, flashattn::backend_name(r.backend), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
