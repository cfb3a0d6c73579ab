#include "worker/engine/training/policy_gradient_objective.h"

#include <vector>

#include "worker/engine/model/row_scores.h"

namespace loom::engine {

absl::Status PolicyGradientObjective::MicroBatch(Transformer& model, const data::TokenBatch& micro_batch,
                                                 double scale, double* sums) {
  if (micro_batch.advantages.size() != static_cast<size_t>(micro_batch.batch_size)) {
    return absl::FailedPreconditionError("an rl batch has no advantages (use RlBatchSource)");
  }
  float* logits = nullptr;
  const std::vector<double> policy = RowLogProbSums(model, micro_batch, &logits);
  std::vector<double> row_grad(micro_batch.batch_size);
  for (int r = 0; r < micro_batch.batch_size; ++r) {
    sums[0] -= micro_batch.advantages[r] * policy[r];
    row_grad[r] = -micro_batch.advantages[r] * scale;
  }
  RowLogProbSumsBackward(model, micro_batch, logits, row_grad);
  return absl::OkStatus();
}

}  // namespace loom::engine
