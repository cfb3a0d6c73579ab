// Language modelling: the mean next-token cross-entropy over the batch's target tokens (every
// pre-training kind, and sft, whose chat rows target the assistant's tokens only). Runs in every
// layout: under tensor parallelism the cross-entropy is vocabulary-parallel, under pipeline
// parallelism the last stage computes it on the logits the 1F1B schedule hands it.
#pragma once

#include "worker/engine/training/objective.h"

namespace loom::engine {

class LanguageModelObjective : public Objective {
 public:
  std::string name() const override { return "language modelling"; }
  double Normalizer(double targets, int /*sequences*/) const override { return targets; }
  absl::Status MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                          double* sums) override;
  bool pipelined() const override { return true; }
  absl::StatusOr<double> LogitsLoss(Transformer& model, const data::TokenBatch& micro_batch, float* logits,
                                    double scale) override;
};

}  // namespace loom::engine
