// An rl stage's batches, made by the policy being trained: each step takes the next prompts of the
// dataset (reshuffled each epoch), samples K completions of each from the current policy with the
// KV-cache sampler, scores them with the math verifier (reward 1 for a correct final number, else
// 0) or a reward model, shapes the rewards with the KL penalty against the frozen reference, and gives every row
// (prompt + completion, targets on the completion) its RLOO advantage (kernels/cpu/policy_gradient.h).
//
// Rows of a global batch: prompts × K; a data-parallel rank samples its contiguous block of the
// prompts. Sample j of the prompt at stream position s draws from Random(seed + s·K + j), so a
// resumed stage samples what the uninterrupted one did.
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

struct RlSourceOptions {
  std::string path;  // JSONL conversations; the last assistant turn is the reference answer
  data::ChatTemplate chat_template = data::ChatTemplate::kChatML;
  uint64_t seed = 0;
  int epochs = 1;
  int samples_per_prompt = 4;  // K >= 2
  SamplingOptions sampling;    // temperature, top-k/p, max_new_tokens
  double kl_coef = 0.05;
  // Rewards from a reward model instead of the verifier (not owned).
  const RewardScorer* reward_model = nullptr;
};

class RlBatchSource : public BatchSource {
 public:
  static absl::StatusOr<std::unique_ptr<RlBatchSource>> Open(const RlSourceOptions& options,
                                                             const data::Tokenizer& tokenizer);
  // The policy samples (the trainer's model) and the frozen reference; neither is owned.
  void SetModels(Transformer* policy, Transformer* reference) {
    policy_ = policy;
    reference_ = reference;
  }

  absl::Status Next(int seq_len, int global_sequences, int dp_rank, int dp_size, data::TokenBatch* out) override;
  std::string SaveState() const override;
  absl::Status RestoreState(std::string_view state) override;
  bool Exhausted() const override { return stream_.Exhausted(); }
  // rl/reward (mean reward: with the verifier, the samples' accuracy), rl/accuracy (verified
  // share, also with a reward model), rl/kl (mean sequence KL to the reference),
  // rl/advantage_abs (mean |advantage|), rl/completion_tokens (mean length).
  std::map<std::string, double> BatchMetrics() const override { return metrics_; }

  int64_t prompts() const { return stream_.size(); }

 private:
  RlBatchSource(RlSourceOptions options, PromptStream stream)
      : options_(std::move(options)), stream_(std::move(stream)) {}

  RlSourceOptions options_;
  PromptStream stream_;
  Transformer* policy_ = nullptr;
  Transformer* reference_ = nullptr;
  std::map<std::string, double> metrics_;
};

}  // namespace loom::engine
