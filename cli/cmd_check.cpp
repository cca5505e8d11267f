// `flashattn check`: every feature x dtype x (forward, backward) on small problems,
// each backend of the device against the fp64 reference, one line per case.
#include <algorithm>
#include <iostream>
#include <memory>
#include <random>

#include "commands.hpp"
#include "verify.hpp"

namespace cli {

namespace {

struct CheckArgs {
  std::string device = "auto", backend = "auto", only;
  std::vector<std::string> dtypes{"fp32", "fp16", "bf16"};
  bool no_backward = false;
  int threads = 0;
  std::optional<std::uint64_t> seed;
};

struct Feature {
  const char* name;
  Spec spec;
};

// Small problems with odd sizes; each exercises one feature (the last, several).
std::vector<Feature> features() {
  auto base = [](std::int64_t sq, std::int64_t sk, int d) {
    Spec s;
    s.batch = 2;
    s.heads = s.heads_k = 3;
    s.seqlen_q = sq;
    s.seqlen_k = sk;
    s.head_dim = d;
    s.causal = false;
    return s;
  };
  std::vector<Feature> f;
  f.push_back({"dense", base(67, 67, 64)});
  f.push_back({"dense-hd7", base(17, 29, 7)});
  f.push_back({"dense-hd256", base(33, 21, 256)});
  f.push_back({"seqlen-q1", base(1, 19, 32)});  // (Sq = Sk = 1 has exactly-zero dQ/dK: no relative scale)
  for (auto [name, sq, sk, tl] : {std::tuple{"causal-br-sq<sk", 37, 91, false}, std::tuple{"causal-br-sq>sk", 91, 37, false},
                                  std::tuple{"causal-tl-sq<sk", 37, 91, true}, std::tuple{"causal-tl-sq>sk", 91, 37, true}}) {
    Spec s = base(sq, sk, 48);
    s.causal = true;
    s.alignment = tl ? Alignment::top_left : Alignment::bottom_right;
    f.push_back({name, s});
  }
  {
    Spec s = base(70, 83, 32);
    s.window_left = 16;
    s.window_right = 8;
    f.push_back({"window-16,8", s});
    s.window_right = 0;
    s.causal = true;
    s.window_left = 24;
    f.push_back({"local-causal-24", s});
    s = base(60, 60, 32);
    s.window_left = 0;
    s.window_right = -1;
    s.alignment = Alignment::top_left;
    f.push_back({"window-0,-1-tl", s});
  }
  {
    Spec s = base(53, 53, 64);
    s.softcap = 2.5f;
    f.push_back({"softcap", s});
  }
  for (auto [name, kind] : {std::pair{"bias(B,H)", BiasKind::full}, std::pair{"bias(1,H)", BiasKind::per_head},
                            std::pair{"bias(B,1)", BiasKind::per_batch}, std::pair{"bias(1,1)", BiasKind::shared}}) {
    Spec s = base(41, 58, 32);
    s.bias = kind;
    s.causal = kind == BiasKind::shared;
    f.push_back({name, s});
  }
  {
    Spec s = base(45, 64, 32);
    s.alibi = true;
    s.causal = true;
    f.push_back({"alibi(H)-causal", s});
    s.causal = false;
    s.alibi_per_batch = true;
    f.push_back({"alibi(B,H)", s});
  }
  {
    Spec s = base(39, 52, 64);
    s.heads = 6;
    s.heads_k = 2;
    s.causal = true;
    f.push_back({"gqa-6/2", s});
    s.heads_k = 1;
    s.causal = false;
    f.push_back({"mqa-6/1", s});
  }
  {
    Spec s = base(64, 64, 32);
    s.batch = 4;
    s.lens_q = {37, 0, 64, 5};
    s.lens_k = {50, 13, 64, 0};
    s.seqlen_q = 64;
    s.seqlen_k = 64;
    s.causal = true;
    f.push_back({"varlen-causal", s});
    s.causal = false;
    s.bias = BiasKind::per_head;
    f.push_back({"varlen-bias", s});
  }
  {
    Spec s = base(57, 77, 64);
    s.heads = 4;
    s.heads_k = 2;
    s.causal = true;
    s.window_left = 20;
    s.softcap = 4.0f;
    s.bias = BiasKind::full;
    s.alibi = true;
    f.push_back({"combined", s});
  }
  return f;
}

std::vector<Backend> backends_for(Device d, Backend requested) {
  if (requested != Backend::automatic) return {requested};
  if (d.kind == flashattn::DeviceKind::cpu) return {Backend::cpu_flash};
  std::vector<Backend> r;
  for (Backend b : {Backend::cuda_portable, Backend::cuda_sm80, Backend::cuda_sm90})
    if (flashattn::backend_available(b)) r.push_back(b);
  return r;
}

void print_line(const char* dir, DType dt, const char* name, Backend b, const std::string& verdict, const std::string& detail) {
  char line[200];
  std::snprintf(line, sizeof line, "%-3s  %-4s  %-16s  %-13s  ", dir, short_dtype(dt), name, flashattn::backend_name(b));
  std::cout << line << verdict << "  " << detail << "\n";
}

std::string stat_detail(const ErrorStat& s, DType dt) {
  return s.name + std::string(6 - std::min<std::size_t>(5, s.name.size()), ' ') + "err " + fmt("%.2e", s.err) + "  bound " + fmt("%.2e", s.bound(dt)) +
         (dt != DType::f32 ? "  (naive " + fmt("%.2e", s.naive) + ")" : "");
}

int check(const CheckArgs& a) {
  const Backend requested = parse_backend(a.backend);
  const Device device = choose_device(a.device, requested);
  const std::uint64_t seed = a.seed ? *a.seed : std::random_device{}() * 0x9e3779b97f4a7c15ull ^ std::random_device{}();
  std::mt19937_64 rng(seed);
  std::vector<DType> dtypes;
  for (const auto& d : a.dtypes) dtypes.push_back(parse_dtype(d));
  const bool backward = !a.no_backward;

  std::cout << "flashattn check: " << describe_device(device, a.threads) << "; seed " << seed
            << "; vs cpu_reference (fp64)\n"
            << "tolerance: fp32 max abs err <= 1e-4*max|ref| + 1e-6; fp16/bf16 <= 2x naive same-precision error + 2 ulps\n";
  int passed = 0, failed = 0, skipped = 0;
  for (const Feature& f : features()) {
    if (!a.only.empty() && std::string(f.name).find(a.only) == std::string::npos) continue;
    for (DType dt : dtypes) {
      Spec s = f.spec;
      s.dtype = dt;
      const Inputs in = random_inputs(s, rng, backward);
      const bool dbias = s.bias != BiasKind::none;
      const Outputs ref = reference(in, backward, dbias);
      Outputs naive;
      if (dt != DType::f32) naive = naive_lowp(in, backward, dbias);
      for (Backend b : backends_for(device, requested)) {
        Session session(in, device, b, a.threads, backward, dbias);
        std::string fwd_error, bwd_error;
        try {
          session.forward();
        } catch (const flashattn::Error& e) {
          if (e.code() != flashattn::ErrorCode::unsupported) throw;
          fwd_error = e.what();
        }
        if (!fwd_error.empty()) {
          print_line("fwd", dt, f.name, b, "SKIP", fwd_error);
          ++skipped;
          continue;
        }
        if (backward) try {
            session.backward();
          } catch (const flashattn::Error& e) {
            if (e.code() != flashattn::ErrorCode::unsupported) throw;
            bwd_error = e.what();
          }
        const Outputs got = session.fetch(backward && bwd_error.empty());
        const CheckResult r = compare(got, ref, dt != DType::f32 ? &naive : nullptr, false);
        const bool ok = r.pass(dt);
        print_line("fwd", dt, f.name, b, ok ? "PASS" : "FAIL", stat_detail(r.worst(dt), dt));
        ok ? ++passed : ++failed;
        if (!backward) continue;
        if (!bwd_error.empty()) {
          print_line("bwd", dt, f.name, b, "SKIP", bwd_error);
          ++skipped;
          continue;
        }
        CheckResult rb = compare(got, ref, dt != DType::f32 ? &naive : nullptr, true);
        rb.stats.erase(rb.stats.begin(), rb.stats.begin() + 2);  // out and lse were the forward's line
        const bool okb = rb.pass(dt);
        print_line("bwd", dt, f.name, b, okb ? "PASS" : "FAIL", stat_detail(rb.worst(dt), dt));
        okb ? ++passed : ++failed;
      }
    }
  }
  std::cout << passed + failed + skipped << " cases: " << passed << " passed, " << failed << " failed, " << skipped
            << " skipped\n";
  if (passed + failed == 0) {
    std::cerr << "flashattn: error: no case ran (check --only, --dtypes and --backend)\n";
    return 1;
  }
  return failed ? 1 : 0;
}

}  // namespace

Command add_check(CLI::App& app) {
  auto a = std::make_shared<CheckArgs>();
  CLI::App* c = app.add_subcommand(
      "check", "Correctness sweep: features x dtypes x (forward, backward) against the fp64 reference, one line per case");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->add_option("--backend", a->backend, "auto (every backend of the device) or one backend name")->capture_default_str();
  c->add_option("--dtypes", a->dtypes, "Dtypes, comma-separated")->delimiter(',')->capture_default_str();
  c->add_option("--only", a->only, "Only features whose name contains this text");
  c->add_flag("--no-backward", a->no_backward, "Forward only");
  c->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->capture_default_str();
  c->add_option("--seed", a->seed, "Random seed (default: fresh, printed)");
  return [a] { return check(*a); };
}

}  // namespace cli
