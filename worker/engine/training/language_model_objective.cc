#include "worker/engine/training/language_model_objective.h"

#include "common/status_macros.h"
#include "kernels/cpu/cross_entropy.h"
#include "worker/engine/parallel/tensor_parallel.h"

namespace loom::engine {

static_assert(kernels::cpu::kIgnoreTarget == data::kIgnoreIndex, "one ignore index across the engine");

absl::Status LanguageModelObjective::MicroBatch(Transformer& model, const data::TokenBatch& micro_batch,
                                                double scale, double* sums) {
  LOOM_ASSIGN_OR_RETURN(float* logits, model.RunForward(micro_batch));
  LOOM_ASSIGN_OR_RETURN(double loss, LogitsLoss(model, micro_batch, logits, scale));
  sums[0] += loss;
  return model.RunBackward(logits);
}

absl::StatusOr<double> LanguageModelObjective::LogitsLoss(Transformer& model, const data::TokenBatch& micro_batch,
                                                          float* logits, double scale) {
  // This rank's vocabulary columns under tensor parallelism; d(loss)/d(logits) written over them.
  const int vocab = model.config().vocab;
  const float grad_scale = static_cast<float>(scale);
  Communicator* tensor = model.tensor_parallel();
  if (tensor != nullptr && tensor->size() > 1) {
    return VocabParallelCrossEntropy(*tensor, logits, micro_batch.targets.data(), micro_batch.tokens(), vocab,
                                     model.vocab_begin(), grad_scale, logits);
  }
  return kernels::cpu::CrossEntropy(logits, micro_batch.targets.data(), micro_batch.tokens(), vocab, grad_scale,
                                    logits)
      .loss_sum;
}

}  // namespace loom::engine
