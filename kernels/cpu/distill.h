// Distillation losses over the vocabulary, fused with the plain LM loss, forward and backward in
// one pass per row (the teacher's logits are computed on the fly by the caller, one micro-batch
// at a time, so no logit cache is ever stored).
//
//   soft_ce      −Σ_v p_T(v) log p_S(v), both softmaxes at `temperature` (Gemma 2). With top_k > 0
//                the teacher keeps its k most likely tokens plus one tail bucket holding the rest
//                of its mass, and the student's tail is 1 − Σ_top-k p_S (a grouped categorical).
//   top1_target  −w log p_S(argmax p_T) − (1−w) log p_S(label): the cross-entropy against the
//                AFM target w·onehot(teacher top-1) + (1−w)·onehot(label), w = teacher_weight.
//
// Row loss = (1 − lm_weight)·distill + lm_weight·(plain cross-entropy on the label). Rows whose
// label is kIgnoreTarget take no loss. The gradient is with respect to the student's logits (for
// soft_ce that carries the 1/temperature of the chain rule; no T² rescaling is applied).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

struct DistillOptions {
  enum class Mode { kSoftCrossEntropy, kTop1Target };
  Mode mode = Mode::kSoftCrossEntropy;
  float temperature = 1.0f;
  int top_k = 0;  // soft_ce: 0 = full distribution
  float teacher_weight = 0.9f;
  float lm_weight = 0.0f;
};

struct DistillResult {
  double loss_sum = 0;     // Σ rows of the combined loss
  double distill_sum = 0;  // Σ rows of the distillation term alone
  double lm_sum = 0;       // Σ rows of the plain cross-entropy alone
  int64_t counted = 0;     // rows with a label
};

// student, teacher: [rows, vocab]; labels: [rows] or kIgnoreTarget. When dstudent is not null it
// receives grad_scale · d(row loss)/d(student logits) (zeros for ignored rows); it may alias
// `student`.
DistillResult DistillCrossEntropy(const float* student, const float* teacher, const int32_t* labels,
                                  int64_t rows, int64_t vocab, const DistillOptions& options,
                                  float grad_scale, float* dstudent);

}  // namespace loom::kernels::cpu
