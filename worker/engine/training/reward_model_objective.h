// Reward modelling (reward_model stages): on (chosen, rejected) row pairs, the Bradley–Terry loss
// −log σ(r_chosen − r_rejected − margin), where a row's reward is the logit of `reward_token` at its
// last target position (row_scores.h RowRewards: the LM head's row for that token is the scalar
// head). Measures: rm/accuracy (r_chosen > r_rejected) and rm/margin (mean r_chosen − r_rejected).
#pragma once

#include <cstdint>

#include "worker/engine/training/pair_objective.h"

namespace loom::engine {

class RewardModelObjective : public PairObjective {
 public:
  RewardModelObjective(int32_t reward_token, double margin) : reward_token_(reward_token), margin_(margin) {}
  std::string name() const override { return "reward_model"; }
  std::vector<std::string> measures() const override { return {"rm/accuracy", "rm/margin"}; }
  // The reward token must be inside the model's vocabulary.
  absl::Status Check(const TransformerConfig& model) const override;

 protected:
  absl::StatusOr<std::vector<double>> Score(Transformer& model, const data::TokenBatch& micro_batch) override;
  kernels::cpu::PreferenceResult PairLoss(const data::TokenBatch& micro_batch, const std::vector<double>& chosen,
                                          const std::vector<double>& rejected, double scale, double* d_chosen,
                                          double* d_rejected, double* sums) override;
  absl::Status Backward(Transformer& model, const data::TokenBatch& micro_batch,
                        const std::vector<double>& row_grad) override;

 private:
  int32_t reward_token_;
  double margin_;
  float* logits_ = nullptr;     // of the last Score, owned by the model
  std::vector<int> positions_;  // each row's last target position
};

}  // namespace loom::engine
