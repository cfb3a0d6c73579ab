// Fused softmax + cross-entropy over the vocabulary, forward and backward in one pass per row.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// A target with no loss (same value as data::kIgnoreIndex).
inline constexpr int32_t kIgnoreTarget = -1;

struct CrossEntropyResult {
  double loss_sum = 0;  // Σ over rows with a target of logsumexp(logits) − logits[target]
  int64_t counted = 0;  // rows with a target
};

// logits: [rows, vocab]; targets: [rows] in [0, vocab) or kIgnoreTarget. When dlogits is not
// null, writes grad_scale · (softmax(logits) − onehot(target)) there (zeros for ignored rows);
// dlogits may be the logits buffer itself, which saves the largest activation of the model.
CrossEntropyResult CrossEntropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                float grad_scale, float* dlogits);

}  // namespace loom::kernels::cpu
