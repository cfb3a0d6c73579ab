#include "worker/engine/training/pair_objective.h"

#include "common/status_macros.h"

namespace loom::engine {

absl::Status PairObjective::MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                                       double* sums) {
  LOOM_ASSIGN_OR_RETURN(std::vector<double> scores, Score(model, micro_batch));
  const int pairs = micro_batch.batch_size / 2;
  std::vector<double> chosen(pairs), rejected(pairs), d_chosen(pairs), d_rejected(pairs);
  for (int i = 0; i < pairs; ++i) {
    chosen[i] = scores[2 * i];
    rejected[i] = scores[2 * i + 1];
  }
  const kernels::cpu::PreferenceResult result =
      PairLoss(micro_batch, chosen, rejected, scale, d_chosen.data(), d_rejected.data(), sums);
  sums[0] += result.loss_sum;
  sums[1] += result.accuracy_sum;
  sums[2] += result.margin_sum;
  std::vector<double> row_grad(micro_batch.batch_size);
  for (int r = 0; r < micro_batch.batch_size; ++r) row_grad[r] = r % 2 == 0 ? d_chosen[r / 2] : d_rejected[r / 2];
  return Backward(model, micro_batch, row_grad);
}

}  // namespace loom::engine
