// The shape shared by the objectives that rank the two rows of a preference pair (rows 2i chosen,
// 2i + 1 rejected, in one micro-batch): score each row, compute the pair loss and its gradient
// with respect to the two scores, and backpropagate those through the scores. DPO scores a row by
// its summed log-probability (preference_objective.h); a reward model by one logit
// (reward_model_objective.h). The loss is a mean over pairs; sums[0..2] are the loss, the pairs
// ranked right and the margin, as kernels/cpu/preference.h returns them.
#pragma once

#include <vector>

#include "kernels/cpu/preference.h"
#include "worker/engine/training/objective.h"

namespace loom::engine {

class PairObjective : public Objective {
 public:
  int rows_per_example() const override { return 2; }
  double Normalizer(double /*targets*/, int sequences) const override { return sequences / 2.0; }
  absl::Status MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                          double* sums) final;

 protected:
  // One score per row of `micro_batch` from a forward pass of `model` (whose logits the
  // objective keeps for Backward).
  virtual absl::StatusOr<std::vector<double>> Score(Transformer& model, const data::TokenBatch& micro_batch) = 0;
  // The pairs' loss: adds to sums and writes d(scale · loss)/d(score) of each side.
  virtual kernels::cpu::PreferenceResult PairLoss(const data::TokenBatch& micro_batch,
                                                  const std::vector<double>& chosen,
                                                  const std::vector<double>& rejected, double scale,
                                                  double* d_chosen, double* d_rejected, double* sums) = 0;
  // The backward of Score given d(loss)/d(score) per row.
  virtual absl::Status Backward(Transformer& model, const data::TokenBatch& micro_batch,
                                const std::vector<double>& row_grad) = 0;
};

}  // namespace loom::engine
