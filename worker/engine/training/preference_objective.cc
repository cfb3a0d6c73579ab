#include "worker/engine/training/preference_objective.h"

#include "worker/engine/model/row_scores.h"

namespace loom::engine {

kernels::cpu::DpoOptions DpoOptionsFromProto(const loom::v1::DpoConfig& config) {
  kernels::cpu::DpoOptions o;
  o.loss = config.loss() == loom::v1::DpoConfig::LOSS_IPO     ? kernels::cpu::DpoLoss::kIpo
           : config.loss() == loom::v1::DpoConfig::LOSS_HINGE ? kernels::cpu::DpoLoss::kHinge
                                                              : kernels::cpu::DpoLoss::kSigmoid;
  o.beta = config.has_beta() ? config.beta() : 0.1;
  o.label_smoothing = config.has_label_smoothing() ? config.label_smoothing() : 0.0;
  return o;
}

absl::StatusOr<std::vector<double>> PreferenceObjective::Score(Transformer& model,
                                                               const data::TokenBatch& micro_batch) {
  if (micro_batch.reference_logprobs.size() != static_cast<size_t>(micro_batch.batch_size)) {
    return absl::FailedPreconditionError(
        "a dpo batch has no reference log-probabilities (use PreferenceBatchSource)");
  }
  return RowLogProbSums(model, micro_batch, &logits_);
}

kernels::cpu::PreferenceResult PreferenceObjective::PairLoss(const data::TokenBatch& micro_batch,
                                                             const std::vector<double>& chosen,
                                                             const std::vector<double>& rejected, double scale,
                                                             double* d_chosen, double* d_rejected, double* sums) {
  const size_t pairs = chosen.size();
  std::vector<double> reference_chosen(pairs), reference_rejected(pairs);
  for (size_t i = 0; i < pairs; ++i) {
    reference_chosen[i] = micro_batch.reference_logprobs[2 * i];
    reference_rejected[i] = micro_batch.reference_logprobs[2 * i + 1];
  }
  for (size_t i = 0; i < pairs; ++i) {
    sums[3] += options_.beta * (chosen[i] - reference_chosen[i]);
    sums[4] += options_.beta * (rejected[i] - reference_rejected[i]);
  }
  return kernels::cpu::DpoLossAndGrad(chosen.data(), rejected.data(), reference_chosen.data(),
                                      reference_rejected.data(), static_cast<int64_t>(pairs), options_, scale,
                                      d_chosen, d_rejected);
}

absl::Status PreferenceObjective::Backward(Transformer& model, const data::TokenBatch& micro_batch,
                                           const std::vector<double>& row_grad) {
  RowLogProbSumsBackward(model, micro_batch, logits_, row_grad);
  return absl::OkStatus();
}

}  // namespace loom::engine
