#include "worker/engine/evaluation/evaluator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cross_entropy.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<data::BlendedSampler>> Evaluator::OpenSet(const std::string& set) const {
  data::SamplerOptions o;
  o.sources = data::PreparedSources(options_.data_dir, {set}, "heldout");
  o.mix = {data::MixPoint{0, {{set, 1.0}}}};
  o.seed = 0;  // a fixed order: every evaluation reads the same tokens
  o.expected_tokenizer_hash = options_.tokenizer_hash;
  o.expected_vocab_size = options_.vocab_size;
  absl::StatusOr<std::unique_ptr<data::BlendedSampler>> sampler = data::BlendedSampler::Open(o);
  if (!sampler.ok()) {
    return absl::Status(sampler.status().code(),
                        absl::StrCat("eval set '", set, "': ", sampler.status().message()));
  }
  return sampler;
}

absl::StatusOr<std::unique_ptr<Evaluator>> Evaluator::Open(EvalOptions options) {
  std::unique_ptr<Evaluator> e(new Evaluator(std::move(options)));
  for (const std::string& set : e->options_.sets) {
    absl::StatusOr<std::unique_ptr<data::BlendedSampler>> sampler = e->OpenSet(set);
    if (!sampler.ok()) return sampler.status();
  }
  return e;
}

absl::StatusOr<std::map<std::string, double>> Evaluator::Evaluate(Transformer& model, int seq_len,
                                                                  int rows) const {
  std::map<std::string, double> out;
  const int vocab = model.config().vocab;
  data::TokenBatch batch;
  for (const std::string& set : options_.sets) {
    absl::StatusOr<std::unique_ptr<data::BlendedSampler>> sampler = OpenSet(set);
    if (!sampler.ok()) return sampler.status();
    const int64_t available = (*sampler)->SourceSizes().begin()->second;
    const int64_t budget =
        std::max<int64_t>(int64_t{seq_len} * rows, std::min(options_.max_tokens, available));
    double loss_sum = 0;
    int64_t counted = 0;
    for (int64_t done = 0; done < budget; done += int64_t{seq_len} * rows) {
      if (absl::Status s = (*sampler)->NextBatch(seq_len, rows, 0, 1, &batch); !s.ok()) return s;
      const float* logits = model.Forward(batch);
      const kernels::cpu::CrossEntropyResult r =
          kernels::cpu::CrossEntropy(logits, batch.targets.data(), batch.tokens(), vocab, 0.0f, nullptr);
      loss_sum += r.loss_sum;
      counted += r.counted;
    }
    out[set] = counted > 0 ? loss_sum / counted : 0.0;
  }
  return out;
}

}  // namespace loom::engine
