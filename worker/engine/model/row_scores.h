// Scores of whole rows by a model — the summed log-probability of a row's targets, a reward
// model's reward — and the row they read: a prompt and a completion, targets on the completion.
// Objectives (dpo, rl, reward_model), sources (the frozen reference, rl's KL) and evaluations
// read rows this one way.
#pragma once

#include <cstdint>
#include <vector>

#include "data/batch.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

// One row of seq_len positions: prompt + completion cut to seq_len + 1 tokens, targets where the
// completion's mask is 1, padding after.
void FillCompletionRow(const std::vector<int32_t>& prompt, const std::vector<int32_t>& completion,
                       const std::vector<uint8_t>& mask, int seq_len, int32_t pad_id, int32_t* inputs,
                       int32_t* targets);

// The last position of `row` whose target is not ignored, or -1.
int LastTargetPosition(const data::TokenBatch& batch, int row);

// Per row of `batch`, the model's summed log-probability of the row's targets. `logits`, when
// given, receives the forward pass's logits (owned by the model, valid until its next Forward).
std::vector<double> RowLogProbSums(Transformer& model, const data::TokenBatch& batch, float** logits = nullptr);
// Its backward: the gradients of Σ_rows row_grad[r] · (row r's summed log-probability) added into
// model.grads(), from the `logits` of the RowLogProbSums forward (overwritten).
void RowLogProbSumsBackward(Transformer& model, const data::TokenBatch& batch, float* logits,
                            const std::vector<double>& row_grad);

// Reward-model scores: per row, the logit of `reward_token` at the row's last target position (the
// model has read the whole completion but its last token); the LM head's row for that token is
// the scalar reward head.
std::vector<double> RowRewards(Transformer& model, const data::TokenBatch& batch, int32_t reward_token);

// A reward model as a scorer of sampled completions (rejection sampling, rl): its reward for each
// (prompt, completion), completions cut to seq_len + 1 tokens with the prompt, in batches.
struct RewardScorer {
  Transformer* model = nullptr;  // not owned
  int32_t reward_token = -1;
  int seq_len = 256;
  std::vector<double> Score(const std::vector<const std::vector<int32_t>*>& prompts,
                            const std::vector<std::vector<int32_t>>& completions, int32_t pad_id) const;
};

}  // namespace loom::engine
