// Policy-gradient pieces of the rl stage (RLOO: REINFORCE with a leave-one-out baseline, as in
// AFM's MDLOO and Ahmadian et al. 2024):
//
//   K samples per prompt with rewards r_1..r_K; each sample's advantage is its reward minus the
//   mean of the other K−1:   A_i = r_i − (1/(K−1)) Σ_{j≠i} r_j   (= K/(K−1) · (r_i − mean r))
//   The loss of a sample is −A_i · log πθ(y_i), log πθ(y_i) summed over its completion tokens,
//   A_i held constant. With the KL penalty the reward is first shaped per sample:
//   r_i ← r_i − kl_coef · Σ_t [log πθ(y_t) − log πref(y_t)] (the sequence's k1 KL estimate).
//
// Equal rewards in a group give zero advantages: the group teaches nothing.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// rewards, advantages: [groups * k], group-major (sample j of group g at g * k + j); k >= 2.
// advantages may alias rewards.
void RlooAdvantages(const double* rewards, int64_t groups, int k, double* advantages);

}  // namespace loom::kernels::cpu
