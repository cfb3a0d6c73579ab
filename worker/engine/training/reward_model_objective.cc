#include "worker/engine/training/reward_model_objective.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/engine/model/row_scores.h"

namespace loom::engine {

absl::Status RewardModelObjective::Check(const TransformerConfig& model) const {
  if (reward_token_ >= 0 && reward_token_ < model.vocab) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("reward token ", reward_token_, " is not in the vocabulary"));
}

absl::StatusOr<std::vector<double>> RewardModelObjective::Score(Transformer& model,
                                                                const data::TokenBatch& micro_batch) {
  const int64_t vocab = model.config().vocab;
  logits_ = model.Forward(micro_batch);
  positions_.assign(micro_batch.batch_size, -1);
  std::vector<double> rewards(micro_batch.batch_size);
  for (int r = 0; r < micro_batch.batch_size; ++r) {
    positions_[r] = LastTargetPosition(micro_batch, r);
    if (positions_[r] < 0) return absl::FailedPreconditionError("a preference row has no completion tokens");
    rewards[r] = logits_[(int64_t{r} * micro_batch.seq_len + positions_[r]) * vocab + reward_token_];
  }
  return rewards;
}

kernels::cpu::PreferenceResult RewardModelObjective::PairLoss(const data::TokenBatch& /*micro_batch*/,
                                                              const std::vector<double>& chosen,
                                                              const std::vector<double>& rejected, double scale,
                                                              double* d_chosen, double* d_rejected, double* /*sums*/) {
  return kernels::cpu::BradleyTerryLossAndGrad(chosen.data(), rejected.data(), static_cast<int64_t>(chosen.size()),
                                               margin_, scale, d_chosen, d_rejected);
}

absl::Status RewardModelObjective::Backward(Transformer& model, const data::TokenBatch& micro_batch,
                                            const std::vector<double>& row_grad) {
  // The loss reads one logit per row: d loss / d logits is zero but there.
  const int64_t vocab = model.config().vocab;
  std::fill(logits_, logits_ + micro_batch.tokens() * vocab, 0.0f);
  for (int r = 0; r < micro_batch.batch_size; ++r) {
    logits_[(int64_t{r} * micro_batch.seq_len + positions_[r]) * vocab + reward_token_] =
        static_cast<float>(row_grad[r]);
  }
  model.Backward(logits_);
  return absl::OkStatus();
}

}  // namespace loom::engine
