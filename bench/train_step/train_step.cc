// bench/train_step: one training step (forward, fused cross-entropy, backward, global-norm clip,
// AdamW) of the same Llama-family model in Loom and in PyTorch eager, same threads, batch and
// sequence length, in one run. Prints tokens/s for both, their ratio, and Loom's achieved FLOP/s
// as a fraction of this machine's cblas_sgemm peak measured at the start of the run.
//
// FLOPs per token: 6 x (matrix parameters) + 6 x layers x d_model x seq_len (causal attention,
// forward and backward), TransformerConfig::TrainingFlopsPerToken.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "kernels/cpu/parallel.h"
#include "worker/engine/training/trainer.h"

namespace {

struct Config {
  const char* name;
  int layers, d_model, heads, kv_heads, ffn, vocab, batch, seq, steps;
};

// The demo model and one about 10x larger (in parameters and FLOPs per token).
constexpr Config kConfigs[] = {
    {"demo", 4, 256, 4, 2, 704, 4096, 8, 256, 6},
    {"10x", 8, 640, 10, 5, 1728, 8192, 4, 256, 3},
};

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of a few n^3 cblas_sgemm calls with OpenBLAS's own threading at `threads`.
double SgemmPeak(int threads) {
  const int n = 2048;
  std::vector<float> a(size_t{n} * n, 0.5f), b(size_t{n} * n, 0.25f), c(size_t{n} * n);
  openblas_set_num_threads(threads);
  double best = 0;
  for (int i = 0; i < 4; ++i) {
    const double t0 = Now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                c.data(), n);
    best = std::max(best, 2.0 * n * n * n / (Now() - t0));
  }
  openblas_set_num_threads(1);  // Loom drives one-threaded OpenBLAS calls from its own pool
  return best;
}

// Random tokens, read as a cyclic stream.
class RandomTokens : public loom::engine::TokenStreamSource {
 public:
  RandomTokens(int vocab, int64_t n) : TokenStreamSource(Make(vocab, n)) {}
  static std::vector<int32_t> Make(int vocab, int64_t n) {
    std::mt19937 rng(1);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
    return t;
  }
};

struct Result {
  double tokens_per_second = 0;
  double flops_per_token = 0;
  int64_t params = 0;
};

absl::StatusOr<Result> RunLoom(const Config& c, int threads) {
  const std::string plan_text = absl::StrFormat(R"(name: bench
model: {layers: %d, d_model: %d, heads: %d, kv_heads: %d, ffn_size: %d, vocab_size: %d}
data: {sources: [random]}
stages:
  - name: core
    kind: pretrain
    tokens: 1G
    optimizer: {lr: 1e-4, grad_clip: 1.0}
    parallel: {micro_batch_size: %d}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: %d}]
    seq_len_schedule: [{at_tokens: 0, seq_len: %d}]
    data_mix: [{at_tokens: 0, weights: {random: 1}}]
)",
                                                c.layers, c.d_model, c.heads, c.kv_heads, c.ffn, c.vocab,
                                                c.batch, c.batch * c.seq, c.seq);
  loom::ParsedPlan parsed = loom::ParsePlanText(plan_text, loom::PlanFormat::kYaml);
  if (!parsed.errors.empty()) return absl::InternalError(loom::FormatPlanErrors(parsed.errors));
  loom::kernels::cpu::SetNumThreads(threads);
  RandomTokens data(c.vocab, int64_t{c.batch} * c.seq * 64 + 1);
  loom::engine::TrainerOptions options;
  options.model = parsed.plan.model();
  options.stage = loom::ResolveStage(parsed.plan, 0);
  options.plan_id = "bench";
  auto trainer = loom::engine::Trainer::Create(options, &data);
  if (!trainer.ok()) return trainer.status();
  auto step = [&]() { return (*trainer)->Step(); };
  if (auto s = step(); !s.ok()) return s.status();  // warm-up: plans activations, touches memory
  const double t0 = Now();
  for (int i = 0; i < c.steps; ++i) {
    if (auto s = step(); !s.ok()) return s.status();
  }
  const double seconds = Now() - t0;
  auto config = loom::engine::TransformerConfig::FromProto(options.model);
  Result r;
  r.tokens_per_second = static_cast<double>(c.steps) * c.batch * c.seq / seconds;
  r.flops_per_token = config->TrainingFlopsPerToken(c.seq);
  r.params = (*trainer)->model().num_params();
  return r;
}

absl::StatusOr<double> RunTorch(const Config& c, int threads, const std::string& script) {
  const std::string command = absl::StrFormat(
      "/usr/bin/python3 %s --layers %d --d_model %d --heads %d --kv_heads %d --ffn %d --vocab %d --batch %d "
      "--seq %d --threads %d --steps %d --warmup 1",
      script, c.layers, c.d_model, c.heads, c.kv_heads, c.ffn, c.vocab, c.batch, c.seq, threads, c.steps);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return absl::InternalError("cannot run " + command);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe.get())) out.append(buf, n);
  const auto json = nlohmann::json::parse(out.substr(out.rfind('{')), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("tokens_per_second")) {
    return absl::UnavailableError(
        "PyTorch peer failed (install it with `scripts/setup --bench`; it needs /usr/bin/python3): " + out);
  }
  return json["tokens_per_second"].get<double>();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2;
  std::string only;
  bool skip_torch = false;
  loom::CommandLine cl("bench_train_step",
                       "Training-step throughput of Loom vs PyTorch eager on the same model, batch and "
                       "threads; Loom's FLOP/s as a fraction of the measured cblas_sgemm peak.");
  cl.AddFlag("threads", &threads, "threads for Loom, OpenBLAS's peak and torch.set_num_threads");
  cl.AddFlag("config", &only, "run only this config (demo, 10x)");
  cl.AddFlag("skip-torch", &skip_torch, "do not run the PyTorch peer");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/bench/train_step/torch_train_step.py";

  const double peak = SgemmPeak(threads);
  std::printf("cblas_sgemm peak (2048^3, %d threads): %.1f GFLOP/s\n\n", threads, peak / 1e9);
  std::printf("%-6s %9s %7s %12s %12s %7s %10s %8s\n", "config", "params", "tokens", "loom tok/s",
              "torch tok/s", "ratio", "GFLOP/s", "of peak");
  for (const Config& c : kConfigs) {
    if (!only.empty() && only != c.name) continue;
    auto loom = RunLoom(c, threads);
    if (!loom.ok()) {
      std::fprintf(stderr, "%s: loom failed: %s\n", c.name, std::string(loom.status().message()).c_str());
      return 1;
    }
    double torch = 0;
    if (!skip_torch) {
      auto t = RunTorch(c, threads, script);
      if (!t.ok()) {
        std::fprintf(stderr, "%s: %s\n", c.name, std::string(t.status().message()).c_str());
        return 1;
      }
      torch = *t;
    }
    const double flops = loom->tokens_per_second * loom->flops_per_token;
    std::printf("%-6s %8.1fM %7d %12.0f %12.0f %6.2fx %10.1f %7.1f%%\n", c.name, loom->params / 1e6,
                c.batch * c.seq, loom->tokens_per_second, torch,
                torch > 0 ? loom->tokens_per_second / torch : 0, flops / 1e9, 100 * flops / peak);
    std::fflush(stdout);
  }
  return 0;
}
