// What a training step optimises. The trainer (trainer.h) owns the one loop — the step's batch,
// its micro-batches, the gradient reduction and the optimizer — and an Objective owns what differs
// between stage kinds: the loss of one micro-batch, its gradient, the sums it reports and their
// names. Objectives of today:
//
//   language_model_objective   next-token cross-entropy (pre-training kinds, sft), also
//                              vocabulary-parallel and pipelined
//   distillation_objective     the student against a frozen teacher's logits (distill)
//   preference_objective       DPO / IPO / hinge on (chosen, rejected) row pairs (dpo)
//   reward_model_objective     Bradley–Terry on a scalar head over row pairs (reward_model)
//   policy_gradient_objective  advantage-weighted row log-probabilities (rl)
//
// Every objective's loss is a sum over the global batch divided by Normalizer (target tokens,
// pairs or rows), so the gradients of data-parallel ranks add up to the whole batch's.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

class Objective {
 public:
  virtual ~Objective() = default;

  // The stage kind it serves, for errors ("dpo").
  virtual std::string name() const = 0;
  // Rows that belong together and must share a micro-batch (a preference pair: 2).
  virtual int rows_per_example() const { return 1; }
  // What the loss is a mean over, for a global batch with `targets` target tokens in
  // `sequences` rows.
  virtual double Normalizer(double targets, int sequences) const = 0;
  // The names of sums[1..]: measures reported beside the loss as means over Normalizer
  // ("dpo/accuracy", ...). sums[0] is the loss.
  virtual std::vector<std::string> measures() const { return {}; }

  // Checks what the objective needs of the model before the first step (a teacher's vocabulary,
  // a reward token inside the vocabulary).
  virtual absl::Status Check(const TransformerConfig& model) const { return absl::OkStatus(); }

  // Forward, loss and backward of one micro-batch: the gradients of `scale` · loss add into
  // model.grads(), and the loss sum and the measures' sums add into sums[0..measures().size()].
  virtual absl::Status MicroBatch(Transformer& model, const data::TokenBatch& micro_batch, double scale,
                                  double* sums) = 0;

  // Pipeline parallelism runs the forward and backward itself (1F1B) and asks only for the last
  // stage's loss: its sum over `logits`, with `scale` · d(loss)/d(logits) written over them.
  // Objectives that cannot run pipelined leave `pipelined` false (validation keeps them off pp).
  virtual bool pipelined() const { return false; }
  virtual absl::StatusOr<double> LogitsLoss(Transformer& model, const data::TokenBatch& micro_batch, float* logits,
                                            double scale) {
    return absl::UnimplementedError(name() + " does not run under pipeline parallelism (parallel.pp)");
  }
};

}  // namespace loom::engine
