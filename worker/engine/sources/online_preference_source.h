// An online dpo stage's batches (Qwen 2's online DPO): each step takes the next prompts of the
// dataset, samples N completions of each from the current policy, scores them with the math
// verifier or a reward model, and makes the best and the worst the (chosen, rejected) pair, with
// the frozen reference's log-probabilities computed on the spot. The trainer's DPO step then
// trains on them as on offline pairs. A prompt whose samples all score alike gives a pair whose
// two rows are the same sample: its DPO gradient is zero (up to summation rounding).
//
// Pairs of a global batch: one per prompt; a data-parallel rank samples its contiguous block.
// Sample j of the prompt at stream position s draws from Random(seed + s·N + j).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "worker/engine/sources/batch_source.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/row_scores.h"
#include "worker/engine/sources/prompt_stream.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct OnlinePreferenceOptions {
  std::string path;  // JSONL conversations; the last assistant turn is the reference answer
  data::ChatTemplate chat_template = data::ChatTemplate::kChatML;
  uint64_t seed = 0;
  int epochs = 1;
  int samples_per_prompt = 4;  // N >= 2
  SamplingOptions sampling;
  const RewardScorer* reward_model = nullptr;  // null: the math verifier scores
};

class OnlinePreferenceSource : public BatchSource {
 public:
  static absl::StatusOr<std::unique_ptr<OnlinePreferenceSource>> Open(const OnlinePreferenceOptions& options,
                                                                      const data::Tokenizer& tokenizer);
  // The policy that samples (the trainer's model) and the frozen reference; neither is owned.
  void SetModels(Transformer* policy, Transformer* reference) {
    policy_ = policy;
    reference_ = reference;
  }

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size, data::TokenBatch* out) override;
  std::string SaveState() const override;
  absl::Status RestoreState(std::string_view state) override;
  bool Exhausted() const override { return stream_.Exhausted(); }
  // online/accuracy (verified share of the samples), online/tied (share of prompts whose samples
  // all scored alike), online/chosen_score and online/rejected_score (means).
  std::map<std::string, double> BatchMetrics() const override { return metrics_; }

  int64_t prompts() const { return stream_.size(); }

 private:
  OnlinePreferenceSource(OnlinePreferenceOptions options, PromptStream stream)
      : options_(std::move(options)), stream_(std::move(stream)) {}

  OnlinePreferenceOptions options_;
  PromptStream stream_;
  Transformer* policy_ = nullptr;
  Transformer* reference_ = nullptr;
  std::map<std::string, double> metrics_;
};

}  // namespace loom::engine
