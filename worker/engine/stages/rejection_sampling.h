// Rejection sampling (AFM's rejection-sampling fine-tuning, Llama 3.1's rounds): N samples per
// prompt from the KV-cache sampler, scored by the math verifier or a reward model, the best (or,
// with the verifier, every correct) one kept as a new chat example. A job's ranks split the prompts into contiguous blocks; sample j of
// prompt g draws from Random(seed + g·N + j) whichever rank decodes it, so the dataset does not
// depend on how many ranks made it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/row_scores.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct RejectionSamplingOptions {
  int samples_per_prompt = 4;
  SamplingOptions sampling;  // temperature, top-k/p, max_new_tokens; seed: the stage's
  enum class Keep { kBest, kAllCorrect };
  Keep keep = Keep::kBest;
  int batch = 32;  // sequences decoded together
  data::ChatTemplate chat_template = data::ChatTemplate::kChatML;
  // Scored by a reward model instead of the verifier: Keep::kBest keeps each prompt's
  // highest-scoring sample, right or wrong (the verifier still counts pass@1 and best-of-N).
  const RewardScorer* reward_model = nullptr;
};

struct RejectionSamplingResult {
  int64_t prompts = 0;
  int64_t samples = 0;
  int64_t correct_samples = 0;
  int64_t solved_prompts = 0;  // with at least one correct sample
  // pass@1: the share of samples that are correct; best-of-N: the share of prompts with a
  // correct sample (with a verifier the best sample is a correct one when there is one).
  double pass_at_1() const { return samples ? static_cast<double>(correct_samples) / samples : 0.0; }
  double best_of_n() const { return prompts ? static_cast<double>(solved_prompts) / prompts : 0.0; }
  // Kept examples: the prompt turns and the kept sample as the assistant's answer. With
  // Keep::kBest a prompt without a correct sample keeps nothing.
  std::vector<data::Conversation> kept;
};

// Samples `problems[first, first + count)` (their prompts: every turn before the last assistant
// turn; references: its final number). `first` is the block's index among all prompts, for the
// seeds.
absl::StatusOr<RejectionSamplingResult> SampleAndVerify(const Transformer& model, const data::Tokenizer& tokenizer,
                                                        const std::vector<data::Conversation>& problems, size_t first,
                                                        size_t count, const RejectionSamplingOptions& options);

// The block [first, first + count) of `total` prompts that rank `rank` of `ranks` samples.
void PromptBlock(size_t total, int rank, int ranks, size_t* first, size_t* count);

// One JSON line per conversation ({"messages": [...]}), the format ReadConversations reads.
std::string ConversationsToJsonl(const std::vector<data::Conversation>& conversations);

}  // namespace loom::engine
