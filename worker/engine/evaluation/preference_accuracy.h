// Held-out preference accuracy: how often a model rates the chosen answer of a pair above the
// rejected one — by the summed log-probability (dpo: the policy itself, no reference) or by a
// reward model's reward (reward_model).
#pragma once

#include <cstdint>
#include <vector>

#include "data/chat.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct PreferenceAccuracy {
  int64_t pairs = 0;
  double accuracy = 0;     // share of pairs with log p(chosen) > log p(rejected)
  double mean_margin = 0;  // mean of log p(chosen) − log p(rejected)
};
// Held-out preference accuracy of `model` (no reference: the SFT model it starts from is measured
// the same way), over pairs in batches of `rows_per_batch` / 2.
PreferenceAccuracy EvaluatePreferenceAccuracy(Transformer& model, const std::vector<data::PreferenceExample>& pairs,
                                              int seq_len, int32_t pad_id, int pairs_per_batch = 8);

// Held-out reward accuracy: the share of pairs whose chosen side scores higher.
PreferenceAccuracy EvaluateRewardAccuracy(Transformer& model, const std::vector<data::PreferenceExample>& pairs,
                                          int seq_len, int32_t pad_id, int32_t reward_token, int pairs_per_batch = 8);

}  // namespace loom::engine
