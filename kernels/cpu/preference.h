// Preference losses on sequence log-likelihoods (the published DPO, IPO and Bradley–Terry formulas), per pair, with
// their gradients:
//
//   Δ = [log πθ(y_w) − log πref(y_w)] − [log πθ(y_l) − log πref(y_l)]
//   sigmoid (DPO)   −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)      (ε: conservative label smoothing)
//   ipo             (Δ − 1/(2β))²
//   hinge           relu(1 − βΔ)
//
//   Bradley–Terry (reward model)   −log σ(r_w − r_l − margin)
//
// At initialisation (policy = reference, Δ = 0) the sigmoid loss is ln 2.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

enum class DpoLoss { kSigmoid, kIpo, kHinge };

struct DpoOptions {
  DpoLoss loss = DpoLoss::kSigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;
};

struct PreferenceResult {
  double loss_sum = 0;      // Σ over pairs
  double accuracy_sum = 0;  // pairs ranked right (Δ > 0, or r_w > r_l)
  double margin_sum = 0;    // Σ βΔ (DPO's implicit reward margin) or Σ (r_w − r_l)
};

// policy_*, reference_*: [pairs] summed completion log-probs. Writes d(loss_sum · grad_scale) /
// d(policy_chosen) and / d(policy_rejected) when the pointers are not null.
PreferenceResult DpoLossAndGrad(const double* policy_chosen, const double* policy_rejected,
                                const double* reference_chosen, const double* reference_rejected,
                                int64_t pairs, const DpoOptions& options, double grad_scale,
                                double* d_policy_chosen, double* d_policy_rejected);

// rewards_*: [pairs] scalar rewards. Gradients as above.
PreferenceResult BradleyTerryLossAndGrad(const double* rewards_chosen, const double* rewards_rejected,
                                         int64_t pairs, double margin, double grad_scale, double* d_chosen,
                                         double* d_rejected);

}  // namespace loom::kernels::cpu
