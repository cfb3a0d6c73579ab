// bench/generate: batched autoregressive generation with a KV cache, Loom's Generator against
// PyTorch eager (torch_generate.py: the same model, batched prefill then one forward per token),
// same threads, batch, prompt and new-token counts, greedy, in one run. Prints generated tokens/s
// for both and their ratio: what bounds rejection sampling, online DPO and RL (issue 10's goal is
// >= 2x: Loom's decode loop has no Python in it).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "kernels/cpu/parallel.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/transformer.h"

namespace {

struct Config {
  const char* name;
  int layers, d_model, heads, kv_heads, ffn, vocab, batch, prompt, new_tokens;
};

// The demo model at rejection-sampling shapes: 8 and 32 sequences, a 32-token prompt, 96 new tokens.
constexpr Config kConfigs[] = {
    {"demo-b8", 4, 256, 4, 2, 704, 4096, 8, 32, 96},
    {"demo-b32", 4, 256, 4, 2, 704, 4096, 32, 32, 96},
};

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double RunLoom(const Config& c, int threads, int repeats) {
  loom::kernels::cpu::SetNumThreads(threads);
  loom::v1::ModelConfig m;
  m.set_layers(c.layers);
  m.set_d_model(c.d_model);
  m.set_heads(c.heads);
  m.set_kv_heads(c.kv_heads);
  m.set_ffn_size(c.ffn);
  m.set_vocab_size(c.vocab);
  loom::engine::Transformer model(*loom::engine::TransformerConfig::FromProto(m));
  model.InitWeights(1);
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> prompts(c.batch, std::vector<int32_t>(c.prompt));
  for (auto& p : prompts)
    for (auto& t : p) t = static_cast<int32_t>(rng() % c.vocab);
  loom::engine::Generator generator(model, c.batch, c.prompt + c.new_tokens);
  loom::engine::SamplingOptions options;
  options.temperature = 0;  // greedy, as the peer
  options.max_new_tokens = c.new_tokens;
  generator.Generate(prompts, options);  // warm-up
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    const double t0 = Now();
    const auto out = generator.Generate(prompts, options);
    best = std::min(best, Now() - t0);
    if (static_cast<int>(out[0].size()) != c.new_tokens) std::fprintf(stderr, "short generation\n");
  }
  return static_cast<double>(c.batch) * c.new_tokens / best;
}

absl::StatusOr<double> RunTorch(const Config& c, int threads, int repeats, const std::string& script) {
  const std::string command = absl::StrFormat(
      "/usr/bin/python3 %s --layers %d --d_model %d --heads %d --kv_heads %d --ffn %d --vocab %d --batch %d "
      "--prompt %d --new %d --threads %d --repeats %d",
      script, c.layers, c.d_model, c.heads, c.kv_heads, c.ffn, c.vocab, c.batch, c.prompt, c.new_tokens, threads,
      repeats);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return absl::InternalError("cannot run " + command);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe.get())) out.append(buf, n);
  const size_t brace = out.rfind('{');
  const auto json = nlohmann::json::parse(brace == std::string::npos ? out : out.substr(brace), nullptr,
                                          /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.contains("tokens_per_second")) {
    return absl::UnavailableError(
        "PyTorch peer failed (install it with `scripts/setup --bench`; it needs /usr/bin/python3): " + out);
  }
  return json["tokens_per_second"].get<double>();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, repeats = 3;
  std::string only;
  loom::CommandLine cl("bench_generate",
                       "Batched KV-cache generation: Loom's Generator vs PyTorch eager, same model, threads and "
                       "shapes; prints generated tokens/s and the ratio.");
  cl.AddFlag("threads", &threads, "CPU threads for both");
  cl.AddFlag("repeats", &repeats, "timed generations per side (best is kept)");
  cl.AddFlag("config", &only, "run only this config (demo-b8, demo-b32)");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  const std::string script = std::string(LOOM_SOURCE_DIR) + "/bench/generate/torch_generate.py";
  std::printf("%-9s %6s %7s %4s %12s %12s %7s\n", "config", "batch", "prompt", "new", "loom tok/s", "torch tok/s",
              "ratio");
  for (const Config& c : kConfigs) {
    if (!only.empty() && only != c.name) continue;
    const double loom = RunLoom(c, threads, repeats);
    absl::StatusOr<double> torch = RunTorch(c, threads, repeats, script);
    if (!torch.ok()) {
      std::printf("%-9s %6d %7d %4d %12.0f %12s\n", c.name, c.batch, c.prompt, c.new_tokens, loom, "-");
      std::fprintf(stderr, "%s\n", std::string(torch.status().message()).c_str());
      continue;
    }
    std::printf("%-9s %6d %7d %4d %12.0f %12.0f %6.2fx\n", c.name, c.batch, c.prompt, c.new_tokens, loom, *torch,
                loom / *torch);
    std::fflush(stdout);
  }
  return 0;
}
