// An SFT stage's batches: the data pipeline's ChatSampler (chat template, assistant-only loss
// mask, packing without attention across examples) as the trainer's BatchSource, read for a
// number of epochs.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/chat_sampler.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/sources/batch_source.h"

namespace loom::engine {

class ChatBatchSource : public BatchSource {
 public:
  // `jsonl`: the conversations; template and packing from the stage's `sft` block, epochs from its
  // `dataset` (default 1).
  static absl::StatusOr<std::unique_ptr<ChatBatchSource>> Open(const loom::v1::Stage& stage,
                                                               const std::string& jsonl,
                                                               const data::Tokenizer& tokenizer,
                                                               uint64_t seed);

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                    data::TokenBatch* out) override {
    return sampler_->NextBatch(seq_len, global_sequences, dp_rank, dp_size, out);
  }
  std::string SaveState() const override { return sampler_->SaveState(); }
  absl::Status RestoreState(std::string_view state) override { return sampler_->RestoreState(state); }
  bool Exhausted() const override { return sampler_->epoch() >= epochs_; }

  int64_t tokens_per_epoch() const { return sampler_->tokens_per_epoch(); }
  int epochs() const { return epochs_; }

 private:
  ChatBatchSource(std::unique_ptr<data::ChatSampler> sampler, int epochs)
      : sampler_(std::move(sampler)), epochs_(epochs) {}
  std::unique_ptr<data::ChatSampler> sampler_;
  int epochs_;
};

}  // namespace loom::engine
