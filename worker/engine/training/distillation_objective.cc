#include "worker/engine/training/distillation_objective.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/engine/model/checkpoint.h"

namespace loom::engine {

kernels::cpu::DistillOptions DistillOptionsFromProto(const loom::v1::DistillConfig& config) {
  kernels::cpu::DistillOptions o;
  o.mode = config.mode() == loom::v1::DistillConfig::MODE_TOP1_TARGET
               ? kernels::cpu::DistillOptions::Mode::kTop1Target
               : kernels::cpu::DistillOptions::Mode::kSoftCrossEntropy;
  o.temperature = config.has_temperature() ? static_cast<float>(config.temperature()) : 1.0f;
  o.top_k = config.has_top_k() ? config.top_k() : 0;
  o.teacher_weight = config.has_teacher_weight() ? static_cast<float>(config.teacher_weight()) : 0.9f;
  o.lm_weight = config.has_lm_loss_weight() ? static_cast<float>(config.lm_loss_weight()) : 0.0f;
  return o;
}

absl::StatusOr<std::unique_ptr<DistillationObjective>> DistillationObjective::Load(
    const std::string& teacher_checkpoint, const kernels::cpu::DistillOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> teacher, LoadModel(teacher_checkpoint));
  return std::unique_ptr<DistillationObjective>(
      new DistillationObjective(teacher_checkpoint, std::move(teacher), options));
}

absl::Status DistillationObjective::Check(const TransformerConfig& student) const {
  if (teacher_->config().vocab == student.vocab) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("distill.teacher ", path_, " has vocab_size ",
                                                 teacher_->config().vocab, ", the student ", student.vocab,
                                                 ": they must share a tokenizer"));
}

absl::Status DistillationObjective::MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                                               double* sums) {
  // The teacher's logits live in its own activation buffer until its next Forward.
  const float* teacher_logits = teacher_->Forward(micro_batch);
  float* logits = model.Forward(micro_batch);
  sums[0] += kernels::cpu::DistillCrossEntropy(logits, teacher_logits, micro_batch.targets.data(),
                                               micro_batch.tokens(), model.config().vocab, options_,
                                               static_cast<float>(scale), logits)
                 .loss_sum;
  model.Backward(logits);
  return absl::OkStatus();
}

}  // namespace loom::engine
