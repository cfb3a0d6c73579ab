#include "worker/engine/sources/sampler_source.h"

#include <set>

#include "absl/strings/str_cat.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<SamplerBatchSource>> SamplerBatchSource::Open(
    const loom::v1::Stage& stage, const std::string& data_dir, const std::string& tokenizer_hash,
    int vocab_size, uint64_t seed) {
  if (stage.data_mix().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stage '", stage.name(), "' has no data_mix"));
  }
  data::SamplerOptions options;
  std::set<std::string> names;
  for (const auto& entry : stage.data_mix()) {
    data::MixPoint point;
    point.at_tokens = entry.at_tokens();
    for (const auto& [source, weight] : entry.weights()) {
      point.weights[source] = weight;
      names.insert(source);
    }
    options.mix.push_back(std::move(point));
  }
  options.sources = data::PreparedSources(data_dir, std::vector<std::string>(names.begin(), names.end()));
  options.seed = seed;
  options.expected_tokenizer_hash = tokenizer_hash;
  options.expected_vocab_size = vocab_size;
  absl::StatusOr<std::unique_ptr<data::BlendedSampler>> sampler = data::BlendedSampler::Open(options);
  if (!sampler.ok()) return sampler.status();
  return std::unique_ptr<SamplerBatchSource>(new SamplerBatchSource(std::move(*sampler)));
}

}  // namespace loom::engine
