// Direct preference optimisation (dpo stages): on (chosen, rejected) row pairs that carry the
// frozen reference's summed log-probabilities (PreferenceBatchSource, OnlinePreferenceSource), the
// DPO, IPO or hinge loss of β · Δ, Δ = (policy − reference)_chosen − (policy − reference)_rejected
// (kernels/cpu/preference.h). Measures: dpo/accuracy (Δ > 0), dpo/margin (βΔ), dpo/chosen_reward
// and dpo/rejected_reward (β · (policy − reference) of each side).
#pragma once

#include "loom/v1/plan.pb.h"
#include "worker/engine/training/pair_objective.h"

namespace loom::engine {

// The kernel options a stage's `dpo` block asks for (defaults from plan.proto).
kernels::cpu::DpoOptions DpoOptionsFromProto(const loom::v1::DpoConfig& config);

class PreferenceObjective : public PairObjective {
 public:
  explicit PreferenceObjective(const kernels::cpu::DpoOptions& options) : options_(options) {}
  std::string name() const override { return "dpo"; }
  std::vector<std::string> measures() const override {
    return {"dpo/accuracy", "dpo/margin", "dpo/chosen_reward", "dpo/rejected_reward"};
  }

 protected:
  absl::StatusOr<std::vector<double>> Score(Transformer& model, const data::TokenBatch& micro_batch) override;
  kernels::cpu::PreferenceResult PairLoss(const data::TokenBatch& micro_batch, const std::vector<double>& chosen,
                                          const std::vector<double>& rejected, double scale, double* d_chosen,
                                          double* d_rejected, double* sums) override;
  absl::Status Backward(Transformer& model, const data::TokenBatch& micro_batch,
                        const std::vector<double>& row_grad) override;

 private:
  kernels::cpu::DpoOptions options_;
  float* logits_ = nullptr;  // of the last Score, owned by the model
};

}  // namespace loom::engine
