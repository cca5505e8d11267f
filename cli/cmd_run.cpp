// `flashattn run`: one attention problem (random or from .npy files), timed and
// checked against the fp64 reference on a sample of rows.
#include <iostream>
#include <memory>
#include <random>

#include "commands.hpp"
#include "npy.hpp"
#include "verify.hpp"

namespace cli {

namespace {

struct RunArgs {
  int batch = 2, heads = 16, heads_k = 0, headdim = 128;
  std::int64_t seqlen = 2048;
  std::optional<std::int64_t> seqlen_q, seqlen_k;
  std::string dtype = "bf16", alignment = "bottom-right", window, device = "auto", backend = "auto";
  bool causal = true, alibi = false, backward = false;
  float softcap = 0;
  int threads = 0, repeat = 10, warmup = 1, samples = 64;
  std::optional<std::uint64_t> seed;
  std::string q, k, v, bias, out, lse;
};

// Multiply-adds the (batch, kv head) slice reference may spend on a backward check.
constexpr double kSliceBudget = double(std::int64_t(1) << 31);

BiasKind kind_of_bias(const Tensor& b) {
  const bool per_batch = b.shape[0] != 1, per_head = b.shape[1] != 1;
  return per_batch ? (per_head ? BiasKind::full : BiasKind::per_batch)
                   : (per_head ? BiasKind::per_head : BiasKind::shared);
}

Inputs load_inputs(const RunArgs& a, Spec base, std::mt19937_64& rng) {
  Inputs in;
  in.q = read_npy(a.q);
  in.k = read_npy(a.k);
  in.v = read_npy(a.v);
  for (auto [t, name] : {std::pair{&in.q, "--q"}, std::pair{&in.k, "--k"}, std::pair{&in.v, "--v"}})
    if (t->shape.size() != 4)
      throw UsageError(std::string(name) + ": expected a (batch, seqlen, heads, headdim) array, got shape " +
                       shape_string(t->shape));
  Spec& s = base;
  s.batch = int(in.q.shape[0]);
  s.seqlen_q = in.q.shape[1];
  s.heads = int(in.q.shape[2]);
  s.head_dim = int(in.q.shape[3]);
  s.seqlen_k = in.k.shape[1];
  s.heads_k = int(in.k.shape[2]);
  s.dtype = in.q.dtype;
  if (!a.bias.empty()) {
    in.bias = read_npy(a.bias);
    if (in.bias->shape.size() != 4)
      throw UsageError("--bias: expected a (batch or 1, heads or 1, seqlen_q, seqlen_k) array, got shape " +
                       shape_string(in.bias->shape));
    s.bias = kind_of_bias(*in.bias);
  }
  if (s.alibi) in.alibi = alibi_slopes(s);
  in.spec = s;
  if (a.backward) {
    in.dout = Tensor(s.dtype, in.q.shape);
    fill_normal(in.dout, rng);
  }
  return in;
}

void print_stat(const ErrorStat& st, DType dtype, const char* where) {
  std::cout << "    " << st.name << std::string(6 - std::min<std::size_t>(5, st.name.size()), ' ')
            << "max abs err " << fmt("%.3e", st.err) << "  rel " << fmt("%.2e", st.rel()) << "  bound "
            << fmt("%.3e", st.bound(dtype));
  if (dtype != DType::f32) std::cout << " (2x naive " << short_dtype(dtype) << " " << fmt("%.2e", st.naive) << ")";
  std::cout << "  " << (st.pass(dtype) ? "PASS" : "FAIL") << "  " << where << "\n";
}

int run(const RunArgs& a) {
  const Backend backend = parse_backend(a.backend);
  const Device device = choose_device(a.device, backend);
  const std::uint64_t seed = a.seed ? *a.seed : std::random_device{}() * 0x9e3779b97f4a7c15ull ^ std::random_device{}();
  std::mt19937_64 rng(seed);

  Spec s;
  s.causal = a.causal;
  s.alignment = parse_alignment(a.alignment);
  if (!a.window.empty()) parse_window(a.window, s.window_left, s.window_right);
  s.softcap = a.softcap;
  s.alibi = a.alibi;
  if (a.repeat < 1) throw UsageError("--repeat: must be >= 1");
  if (a.samples < 2) throw UsageError("--samples: must be >= 2");

  Inputs in;
  if (!a.q.empty()) {
    in = load_inputs(a, s, rng);
  } else {
    s.batch = a.batch;
    s.heads = a.heads;
    s.heads_k = a.heads_k > 0 ? a.heads_k : a.heads;
    s.head_dim = a.headdim;
    s.seqlen_q = a.seqlen_q.value_or(a.seqlen);
    s.seqlen_k = a.seqlen_k.value_or(a.seqlen);
    s.dtype = parse_dtype(a.dtype);
    if (s.batch < 0 || s.heads < 1 || s.heads_k < 1 || s.head_dim < 1 || s.seqlen_q < 0 || s.seqlen_k < 0)
      throw UsageError("sizes: batch, seqlens >= 0 and heads, headdim >= 1 are required");
    if (s.heads % s.heads_k != 0)
      throw UsageError("--heads-k: " + std::to_string(s.heads_k) + " must divide --heads " + std::to_string(s.heads));
    in = random_inputs(s, rng, a.backward);
  }
  s = in.spec;

  Session session(in, device, backend, a.threads, a.backward, false);
  // First call on poisoned outputs: the one that is checked.
  const flashattn::Result fr = session.forward();
  std::optional<flashattn::Result> br;
  if (a.backward) br = session.backward();
  const Outputs got = session.fetch(a.backward);

  Timer timer(device);
  auto time = [&](auto&& call) {
    std::vector<double> ms;
    for (int w = 0; w < a.warmup; ++w) call();
    session.synchronize();
    for (int r = 0; r < a.repeat; ++r) {
      timer.start();
      call();
      ms.push_back(timer.stop_ms());
    }
    return median(ms);
  };
  const double fwd_ms = time([&] { session.forward(); });
  const double bwd_ms = a.backward ? time([&] { session.backward(); }) : 0.0;

  const double flops = forward_flops(s);
  const bool window = s.window_left >= 0 || s.window_right >= 0;
  std::cout << "flashattn run\n"
            << "  problem   " << s.describe() << "  " << flashattn::dtype_name(s.dtype) << "\n"
            << "  device    " << describe_device(device, a.threads) << "\n"
            << "  backend   " << flashattn::backend_name(fr.backend)
            << (br && br->backend != fr.backend ? std::string(" (backward: ") + flashattn::backend_name(br->backend) + ")" : "")
            << "\n"
            << "  inputs    " << (a.q.empty() ? "random N(0,1), seed " + std::to_string(seed) : a.q + ", " + a.k + ", " + a.v)
            << "\n"
            << "  forward   " << fmt("%.3f", fwd_ms) << " ms (median of " << a.repeat << ")  "
            << flops_rate(flops, fwd_ms) << (window ? " (visible pairs only)" : s.causal ? " (causal: half)" : "") << "\n";
  if (a.backward)
    std::cout << "  backward  " << fmt("%.3f", bwd_ms) << " ms (median of " << a.repeat << ")  "
              << flops_rate(2.5 * flops, bwd_ms) << " (2.5x forward FLOPs)\n";

  // Checks: forward (and dQ) on sampled rows; dK/dV on one (batch, kv head) slice.
  bool pass = true;
  const auto rows = sample_rows(s, a.samples, rng);
  std::cout << "  check     vs cpu_reference (fp64); tolerance: "
            << (s.dtype == DType::f32 ? "max abs err <= 1e-4 * max|ref| + 1e-6"
                                      : "max abs err <= 2x naive same-precision error + 2 ulps")
            << "\n";
  if (rows.empty()) std::cout << "    nothing to check: the problem has no query rows\n";
  if (!rows.empty()) {
    const CheckResult rc = check_rows(in, got, rows, a.backward);
    for (const auto& st : rc.stats) print_stat(st, s.dtype, ("(" + std::to_string(rows.size()) + " sampled rows)").c_str());
    pass = pass && rc.pass(s.dtype);
  }
  if (a.backward && s.batch > 0 && s.seqlen_q > 0) {
    const int group = s.heads / s.heads_k;
    const int b = int(rng() % std::uint64_t(s.batch)), hk = int(rng() % std::uint64_t(s.heads_k));
    const double cost = double(s.seqlen_q) * double(s.seqlen_k) * s.head_dim * group;
    const std::string where = "(slice batch " + std::to_string(b) + ", kv head " + std::to_string(hk) + ", all rows)";
    if (cost <= kSliceBudget) {
      const Inputs sl = head_slice(in, b, hk);
      const Outputs ref = reference(sl, true, false);
      Outputs nv;
      if (s.dtype != DType::f32) nv = naive_lowp(sl, true, false);
      const CheckResult sc = compare(head_slice(got, s, b, hk), ref, s.dtype != DType::f32 ? &nv : nullptr, true);
      for (const auto& st : sc.stats)
        if (st.name == "dk" || st.name == "dv") print_stat(st, s.dtype, where.c_str());
      pass = pass && sc.pass(s.dtype);
    } else {
      std::cout << "    dk/dv NOT CHECKED: the smallest slice that determines them needs " << fmt("%.2g", cost)
                << " multiply-adds (limit " << fmt("%.2g", kSliceBudget) << "); use smaller sizes to check them\n";
    }
  }
  std::cout << "  result    " << (pass ? "PASS" : "FAIL") << "\n";

  if (!a.out.empty()) write_npy(a.out, got.out);
  if (!a.lse.empty()) write_npy(a.lse, got.lse);
  return pass ? 0 : 3;
}

}  // namespace

Command add_run(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* c = app.add_subcommand("run", "Compute attention for one problem, time it and check it against the fp64 reference");
  c->add_option("-b,--batch", a->batch, "Batch size")->capture_default_str();
  c->add_option("--heads", a->heads, "Query heads")->capture_default_str();
  c->add_option("--heads-k", a->heads_k, "Key/value heads (GQA/MQA; default: --heads)");
  c->add_option("-s,--seqlen", a->seqlen, "Sequence length of queries and keys")->capture_default_str();
  c->add_option("--seqlen-q", a->seqlen_q, "Query sequence length (default: --seqlen)");
  c->add_option("--seqlen-k", a->seqlen_k, "Key sequence length (default: --seqlen)");
  c->add_option("-d,--headdim", a->headdim, "Head dimension (1..256)")->capture_default_str();
  c->add_option("--dtype", a->dtype, "fp32, fp16 or bf16")->capture_default_str();
  c->add_flag("--causal", a->causal, "Causal mask (the default)");
  c->add_flag_callback("--no-causal", [a] { a->causal = false; }, "No causal mask");
  c->add_option("--alignment", a->alignment,
                "Diagonal when seqlen_q != seqlen_k: bottom-right (flash_attn) or top-left (PyTorch SDPA)")
      ->capture_default_str();
  c->add_option("--window", a->window, "Sliding window L,R around the diagonal (-1 = unbounded)");
  c->add_option("--softcap", a->softcap, "Softcap (0 = off)");
  c->add_flag("--alibi", a->alibi, "Add ALiBi with slopes 2^(-8(h+1)/H)");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->add_option("--backend", a->backend, "auto, cpu_reference, cpu_flash, cuda_portable, cuda_sm80 or cuda_sm90")
      ->capture_default_str();
  c->add_flag("--backward", a->backward, "Also time and check the backward pass");
  c->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->capture_default_str();
  c->add_option("--repeat", a->repeat, "Timed repeats (the median is reported)")->capture_default_str();
  c->add_option("--warmup", a->warmup, "Untimed calls before timing")->capture_default_str();
  c->add_option("--samples", a->samples, "Query rows checked against the reference")->capture_default_str();
  c->add_option("--seed", a->seed, "Random seed (default: fresh, printed)");
  auto* q = c->add_option("--q", a->q, "Q from a .npy file, (batch, seqlen_q, heads, headdim)");
  auto* k = c->add_option("--k", a->k, "K from a .npy file, (batch, seqlen_k, heads_k, headdim)");
  auto* v = c->add_option("--v", a->v, "V from a .npy file, like K");
  auto* bias = c->add_option("--bias", a->bias, "Additive bias from a .npy file, (batch or 1, heads or 1, seqlen_q, seqlen_k)");
  c->add_option("--out", a->out, "Write O to this .npy file");
  c->add_option("--lse", a->lse, "Write the logsumexp (fp32, (batch, heads, seqlen_q)) to this .npy file");
  q->needs(k)->needs(v);
  k->needs(q);
  v->needs(q);
  bias->needs(q);
  for (const char* size : {"--batch", "--heads", "--heads-k", "--seqlen", "--seqlen-q", "--seqlen-k", "--headdim", "--dtype"})
    q->excludes(c->get_option(size));
  return [a] { return run(*a); };
}

}  // namespace cli
