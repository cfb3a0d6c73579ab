// The data pipeline's blended sampler as the trainer's BatchSource: a stage's data_mix over the
// prepared token shards of `loom data prepare`, checked against the tokenizer the model uses.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/sources/batch_source.h"

namespace loom::engine {

class SamplerBatchSource : public BatchSource {
 public:
  // Opens the train split of every source the stage's mix names, under `data_dir`; the shards must
  // carry `tokenizer_hash` (empty: not checked) and a `vocab_size`-piece tokenizer (the model's vocabulary may be larger).
  static absl::StatusOr<std::unique_ptr<SamplerBatchSource>> Open(const loom::v1::Stage& stage,
                                                                  const std::string& data_dir,
                                                                  const std::string& tokenizer_hash,
                                                                  int vocab_size, uint64_t seed);

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                    data::TokenBatch* out) override {
    return sampler_->NextBatch(seq_len, global_sequences, dp_rank, dp_size, out);
  }
  std::string SaveState() const override { return sampler_->SaveState(); }
  absl::Status RestoreState(std::string_view state) override { return sampler_->RestoreState(state); }
  std::map<std::string, double> MixWeights() const override { return sampler_->CurrentWeights(); }
  std::map<std::string, int64_t> SourceTokens() const override { return sampler_->SourceTokens(); }

 private:
  explicit SamplerBatchSource(std::unique_ptr<data::BlendedSampler> sampler) : sampler_(std::move(sampler)) {}
  std::unique_ptr<data::BlendedSampler> sampler_;
};

}  // namespace loom::engine
