// Policy gradient (rl stages, RLOO): every row is one sampled completion carrying its advantage
// (RlBatchSource: the leave-one-out baseline, KL to the reference folded into the reward); the
// loss is the mean over rows of −advantage · (the row's summed log-probability).
#pragma once

#include "worker/engine/training/objective.h"

namespace loom::engine {

class PolicyGradientObjective : public Objective {
 public:
  std::string name() const override { return "rl"; }
  double Normalizer(double /*targets*/, int sequences) const override { return sequences; }
  absl::Status MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                          double* sums) override;
};

}  // namespace loom::engine
