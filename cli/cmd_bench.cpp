// `flashattn bench`: a timing sweep over seqlen, head dim, causal and dtype, as a
// table on screen and CSV/JSON files. Correctness is `run`'s and `check`'s job.
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "peak.hpp"

namespace cli {

namespace {

struct BenchArgs {
  std::string preset = "auto", device = "auto", backend = "auto", causal = "both";
  std::vector<std::int64_t> seqlens;
  std::vector<int> headdims;
  std::vector<std::string> dtypes;
  std::int64_t tokens = 16384;
  int batch = 0, heads = 0, threads = 0, repeat = 0, warmup = -1;
  bool backward = false;
  double peak_gflops = 0;
  std::string csv, json;
};

struct Case {
  int batch, heads, headdim;
  std::int64_t seqlen;
  bool causal;
  DType dtype;
};

struct Row {
  Case c;
  std::string backend, error;
  double fwd_ms = 0, fwd_gflops = 0, bwd_ms = 0, bwd_gflops = 0;
};

std::vector<Case> make_cases(const BenchArgs& a, bool cpu_preset) {
  std::vector<std::int64_t> seqlens = a.seqlens;
  std::vector<int> headdims = a.headdims;
  std::vector<std::string> dtypes = a.dtypes;
  if (seqlens.empty()) seqlens = cpu_preset ? std::vector<std::int64_t>{2048} : std::vector<std::int64_t>{512, 1024, 2048, 4096, 8192, 16384};
  if (headdims.empty()) headdims = cpu_preset ? std::vector<int>{128} : std::vector<int>{64, 128, 256};
  if (dtypes.empty()) dtypes = cpu_preset ? std::vector<std::string>{"fp32", "bf16"} : std::vector<std::string>{"bf16", "fp16"};
  std::vector<bool> causals;
  if (a.causal == "both") causals = {false, true};
  else if (a.causal == "on") causals = {true};
  else if (a.causal == "off") causals = {false};
  else throw UsageError("--causal: expected both, on or off, got '" + a.causal + "'");
  std::vector<Case> cases;
  for (const auto& dt : dtypes)
    for (int hd : headdims)
      for (bool causal : causals)
        for (auto s : seqlens) {
          if (s < 1 || hd < 1) throw UsageError("--seqlens/--headdims: values must be >= 1");
          Case c;
          c.seqlen = s;
          c.headdim = hd;
          c.causal = causal;
          c.dtype = parse_dtype(dt);
          // GPU sweep: a fixed token count and model width (FlashAttention papers' grid).
          c.batch = a.batch > 0 ? a.batch : cpu_preset ? 1 : int(std::max<std::int64_t>(1, a.tokens / s));
          c.heads = a.heads > 0 ? a.heads : cpu_preset ? 16 : std::max(1, 2048 / hd);
          cases.push_back(c);
        }
  return cases;
}

void progress(std::size_t done, std::size_t total, const std::string& what) {
  if (!isatty(STDERR_FILENO)) return;
  const int width = 30;
  const int fill = total ? int(width * done / total) : width;
  std::cerr << "\r[" << std::string(std::size_t(fill), '#') << std::string(std::size_t(width - fill), ' ') << "] "
            << done << "/" << total << " " << what << "\033[K" << std::flush;
  if (done == total) std::cerr << "\r\033[K" << std::flush;
}

// Random inputs for the largest case, placed once; each case views a prefix.
struct Pool {
  std::int64_t n = 0;  // elements per operand
  TensorView in, out, lse;
};

TensorView operand(const TensorView& pool, int slot, std::int64_t n, const std::vector<std::int64_t>& shape) {
  TensorView v = pool;
  v.data = static_cast<unsigned char*>(pool.data) + std::size_t(slot) * std::size_t(n) * flashattn::dtype_size(pool.dtype);
  v.rank = int(shape.size());
  std::int64_t stride = 1;
  for (int i = v.rank - 1; i >= 0; --i) {
    v.shape[i] = shape[i];
    v.strides[i] = stride;
    stride *= shape[i];
  }
  return v;
}

Row run_case(const Case& c, const BenchArgs& a, Backend backend, Timer& timer, Placement& mem, const Pool& pool,
             int repeat, int warmup) {
  Row r;
  r.c = c;
  Spec s;
  s.batch = c.batch;
  s.heads = s.heads_k = c.heads;
  s.head_dim = c.headdim;
  s.seqlen_q = s.seqlen_k = c.seqlen;
  s.causal = c.causal;
  const double flops = forward_flops(s);
  const auto qs = q_shape(s);
  const std::int64_t n = pool.n;
  const TensorView q = operand(pool.in, 0, n, qs), k = operand(pool.in, 1, n, qs), v = operand(pool.in, 2, n, qs),
                   dout = operand(pool.in, 3, n, qs);
  const TensorView out = operand(pool.out, 0, n, qs), dq = operand(pool.out, 1, n, qs),
                   dk = operand(pool.out, 2, n, qs), dv = operand(pool.out, 3, n, qs);
  const TensorView lse = operand(pool.lse, 0, 0, lse_shape(s));
  flashattn::Options opt;
  opt.causal = c.causal;
  opt.backend = backend;
  opt.num_threads = a.threads;
  try {
    auto time = [&](auto&& call) {
      for (int w = 0; w < warmup; ++w) call();
      mem.synchronize();
      std::vector<double> ms;
      for (int i = 0; i < repeat; ++i) {
        timer.start();
        call();
        ms.push_back(timer.stop_ms());
      }
      return median(ms);
    };
    r.backend = flashattn::backend_name(flashattn::forward(q, k, v, out, lse, opt).backend);
    r.fwd_ms = time([&] { flashattn::forward(q, k, v, out, lse, opt); });
    r.fwd_gflops = flops / (r.fwd_ms * 1e6);
    if (a.backward) {
      r.bwd_ms = time([&] { flashattn::backward(q, k, v, out, dout, lse, dq, dk, dv, opt); });
      r.bwd_gflops = 2.5 * flops / (r.bwd_ms * 1e6);
    }
  } catch (const flashattn::Error& e) {
    r.error = e.what();
  }
  return r;
}

int bench(const BenchArgs& a) {
  const Backend backend = parse_backend(a.backend);
  const Device device = choose_device(a.device, backend);
  const bool gpu = device.kind == flashattn::DeviceKind::cuda;
  if (a.preset != "auto" && a.preset != "cpu" && a.preset != "gpu")
    throw UsageError("--preset: expected auto, cpu or gpu, got '" + a.preset + "'");
  const bool cpu_preset = a.preset == "cpu" || (a.preset == "auto" && !gpu);
  const std::vector<Case> cases = make_cases(a, cpu_preset);
  const int repeat = a.repeat > 0 ? a.repeat : gpu ? 20 : 3;
  const int warmup = a.warmup >= 0 ? a.warmup : gpu ? 3 : 1;
  if (a.tokens < 1) throw UsageError("--tokens: must be >= 1");

  Peak peak;
  if (!gpu) peak = cpu_fp32_peak(a.threads, a.peak_gflops);

  std::cout << "flashattn bench\n  device    " << describe_device(device, a.threads) << "\n";
  if (!gpu) std::cout << "  peak      " << peak.basis << "\n";
  std::cout << "  FLOPs     4*B*H*S*S*D forward (half when causal), backward 2.5x; median of " << repeat
            << " after " << warmup << " warm-up\n";

  std::mt19937_64 rng(12345);
  Placement mem(device);
  // Inputs and outputs are shared by every case of a dtype: filled once, viewed per case.
  std::vector<Row> rows;
  Timer timer(device);
  std::size_t done = 0;
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    std::int64_t n = 0, nl = 0;
    for (const auto& c : cases)
      if (c.dtype == dt) {
        n = std::max<std::int64_t>(n, std::int64_t(c.batch) * c.seqlen * c.heads * c.headdim);
        nl = std::max<std::int64_t>(nl, std::int64_t(c.batch) * c.heads * c.seqlen);
      }
    if (n == 0) continue;
    Pool pool;
    pool.n = n;
    Tensor in(dt, {4 * n});  // q, k, v, dout
    fill_normal(in, rng);
    pool.in = mem.put(in);
    Tensor out(dt, {4 * n}), lse(DType::f32, {nl});
    pool.out = mem.output(out);
    pool.lse = mem.output(lse);
    for (const auto& c : cases) {
      if (c.dtype != dt) continue;
      std::ostringstream what;
      what << short_dtype(dt) << " D=" << c.headdim << " S=" << c.seqlen << (c.causal ? " causal" : "");
      progress(done, cases.size(), what.str());
      rows.push_back(run_case(c, a, backend, timer, mem, pool, repeat, warmup));
      ++done;
    }
    progress(done, cases.size(), "");
  }

  // Table.
  const double unit = gpu ? 1000.0 : 1.0;
  const char* rate = gpu ? "TFLOP/s" : "GFLOP/s";
  std::cout << "\n seqlen  batch  heads  hdim  causal  dtype  backend        fwd ms   fwd " << rate;
  if (a.backward) std::cout << "   bwd ms   bwd " << rate;
  if (peak.gflops > 0) std::cout << "  fwd %peak";
  std::cout << "\n";
  for (const Row& r : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "%7lld %6d %6d %5d  %-6s  %-5s  %-13s", static_cast<long long>(r.c.seqlen),
                  r.c.batch, r.c.heads, r.c.headdim, r.c.causal ? "yes" : "no", short_dtype(r.c.dtype),
                  r.error.empty() ? r.backend.c_str() : "-");
    std::cout << line;
    if (!r.error.empty()) {
      std::cout << "  error: " << r.error << "\n";
      continue;
    }
    std::snprintf(line, sizeof line, " %8.3f %11.2f", r.fwd_ms, r.fwd_gflops / unit);
    std::cout << line;
    if (a.backward) {
      std::snprintf(line, sizeof line, " %8.3f %11.2f", r.bwd_ms, r.bwd_gflops / unit);
      std::cout << line;
    }
    if (peak.gflops > 0) std::cout << fmt(" %9.1f%%", 100.0 * r.fwd_gflops / peak.gflops);
    std::cout << "\n";
  }

  if (!a.csv.empty()) {
    std::ofstream f(a.csv);
    if (!f) throw UsageError("--csv: cannot write " + a.csv);
    f << "seqlen,batch,heads,headdim,causal,dtype,backend,fwd_ms,fwd_gflops,bwd_ms,bwd_gflops,fwd_peak_fraction,error\n";
    for (const Row& r : rows)
      f << r.c.seqlen << ',' << r.c.batch << ',' << r.c.heads << ',' << r.c.headdim << ',' << (r.c.causal ? 1 : 0)
        << ',' << short_dtype(r.c.dtype) << ',' << r.backend << ',' << r.fwd_ms << ',' << r.fwd_gflops << ','
        << (a.backward ? std::to_string(r.bwd_ms) : "") << ',' << (a.backward ? std::to_string(r.bwd_gflops) : "")
        << ',' << (peak.gflops > 0 ? std::to_string(r.fwd_gflops / peak.gflops) : "") << ",\""
        << r.error << "\"\n";
  }
  if (!a.json.empty()) {
    nlohmann::json j;
    j["tool"] = std::string("flashattn ") + flashattn::kVersion;
    j["device"] = describe_device(device, a.threads);
    j["repeat"] = repeat;
    j["warmup"] = warmup;
    j["flops_convention"] = "forward 4*B*H*Sq*Sk*D, halved when causal; backward 2.5x forward";
    if (peak.gflops > 0) {
      j["peak_fp32_gflops"] = peak.gflops;
      j["peak_basis"] = peak.basis;
    }
    for (const Row& r : rows) {
      nlohmann::json e = {{"seqlen", r.c.seqlen},  {"batch", r.c.batch},          {"heads", r.c.heads},
                          {"headdim", r.c.headdim}, {"causal", r.c.causal},        {"dtype", short_dtype(r.c.dtype)},
                          {"backend", r.backend},   {"fwd_ms", r.fwd_ms},          {"fwd_gflops", r.fwd_gflops}};
      if (a.backward) {
        e["bwd_ms"] = r.bwd_ms;
        e["bwd_gflops"] = r.bwd_gflops;
      }
      if (peak.gflops > 0) e["fwd_peak_fraction"] = r.fwd_gflops / peak.gflops;
      if (!r.error.empty()) e["error"] = r.error;
      j["results"].push_back(e);
    }
    std::ofstream f(a.json);
    if (!f) throw UsageError("--json: cannot write " + a.json);
    f << j.dump(2) << "\n";
  }
  for (const Row& r : rows)
    if (!r.error.empty()) return 1;
  return 0;
}

}  // namespace

Command add_bench(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* c = app.add_subcommand("bench", "Time a sweep over seqlen, head dim, causal and dtype; print a table, write CSV/JSON");
  c->add_option("--preset", a->preset,
                "auto (by device), gpu (seqlen 512..16k at --tokens, head dims 64/128/256 with heads=2048/hd, bf16+fp16) "
                "or cpu (B=1, H=16, S=2048, D=128, fp32+bf16)")
      ->capture_default_str();
  c->add_option("--seqlens", a->seqlens, "Sequence lengths, comma-separated")->delimiter(',');
  c->add_option("--headdims", a->headdims, "Head dims, comma-separated")->delimiter(',');
  c->add_option("--dtypes", a->dtypes, "Dtypes, comma-separated (fp32, fp16, bf16)")->delimiter(',');
  c->add_option("--causal", a->causal, "both, on or off")->capture_default_str();
  c->add_option("--tokens", a->tokens, "Tokens per batch in the gpu preset (batch = tokens / seqlen)")->capture_default_str();
  c->add_option("--batch", a->batch, "Fixed batch size (overrides the preset)");
  c->add_option("--heads", a->heads, "Fixed head count (overrides the preset)");
  c->add_option("--device", a->device, "auto, cpu or cuda")->capture_default_str();
  c->add_option("--backend", a->backend, "auto or a backend name (see `flashattn info`)")->capture_default_str();
  c->add_flag("--backward", a->backward, "Also time the backward pass");
  c->add_option("--threads", a->threads, "CPU threads (0 = all cores)")->capture_default_str();
  c->add_option("--repeat", a->repeat, "Timed repeats per case (default 20 on GPU, 3 on CPU)");
  c->add_option("--warmup", a->warmup, "Warm-up calls per case (default 3 on GPU, 1 on CPU)");
  c->add_option("--peak-gflops", a->peak_gflops, "CPU fp32 FMA peak in GFLOP/s (default: an estimate, printed)");
  c->add_option("--csv", a->csv, "Write the results as CSV");
  c->add_option("--json", a->json, "Write the results as JSON");
  return [a] { return bench(*a); };
}

}  // namespace cli
