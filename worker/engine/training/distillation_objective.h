// Distillation (distill stages): the student trains against a frozen teacher's predictions on the
// same tokens, run forward beside it on every micro-batch — a soft cross-entropy to the teacher's
// distribution, or AFM's convex mix of the true label and the teacher's top-1 (kernels/cpu/distill.h).
// Teacher and student share the tokenizer; the teacher runs whole, so the student does not run
// under tensor or pipeline parallelism (validation refuses it).
#pragma once

#include <memory>
#include <string>

#include "kernels/cpu/distill.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/training/objective.h"

namespace loom::engine {

// The kernel options a stage's `distill` block asks for (defaults from plan.proto).
kernels::cpu::DistillOptions DistillOptionsFromProto(const loom::v1::DistillConfig& config);

class DistillationObjective : public Objective {
 public:
  // Loads the teacher from its checkpoint (its own architecture).
  static absl::StatusOr<std::unique_ptr<DistillationObjective>> Load(const std::string& teacher_checkpoint,
                                                                    const kernels::cpu::DistillOptions& options);

  std::string name() const override { return "distill"; }
  double Normalizer(double targets, int /*sequences*/) const override { return targets; }
  // The student's vocabulary must be the teacher's.
  absl::Status Check(const TransformerConfig& student) const override;
  absl::Status MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                          double* sums) override;

 private:
  DistillationObjective(std::string path, std::unique_ptr<Transformer> teacher, kernels::cpu::DistillOptions options)
      : path_(std::move(path)), teacher_(std::move(teacher)), options_(options) {}

  std::string path_;
  std::unique_ptr<Transformer> teacher_;
  kernels::cpu::DistillOptions options_;
};

}  // namespace loom::engine
