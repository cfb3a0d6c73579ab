// Per-token log-probabilities of given targets, and their backward: what sequence-level losses
// (DPO, reward-model-free preference losses, RL policy gradients) are built from. A sequence's
// log-likelihood is the sum of its rows' values over the tokens that count (completion tokens).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// out[r] = log softmax(logits[r])[targets[r]], or 0 where targets[r] is kIgnoreTarget.
void TokenLogProbs(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* out);

// dlogits[r] = grad[r] · (onehot(targets[r]) − softmax(logits[r])): the gradient of Σ grad[r]·out[r]
// (zeros for ignored rows). dlogits may be the logits buffer itself.
void TokenLogProbsBackward(const float* logits, const int32_t* targets, const float* grad, int64_t rows,
                           int64_t vocab, float* dlogits);

}  // namespace loom::kernels::cpu
