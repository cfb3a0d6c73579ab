#include "kernels/cpu/preference.h"

#include <cmath>

namespace loom::kernels::cpu {
namespace {

// log σ(x), stable for large |x|.
double LogSigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double Sigmoid(double x) { return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x)); }

}  // namespace

PreferenceResult DpoLossAndGrad(const double* pc, const double* pr, const double* rc, const double* rr,
                                int64_t pairs, const DpoOptions& o, double grad_scale, double* dpc,
                                double* dpr) {
  PreferenceResult result;
  const double b = o.beta, eps = o.label_smoothing;
  for (int64_t i = 0; i < pairs; ++i) {
    const double delta = (pc[i] - rc[i]) - (pr[i] - rr[i]);
    double loss = 0, dloss_ddelta = 0;
    switch (o.loss) {
      case DpoLoss::kSigmoid:
        loss = -(1 - eps) * LogSigmoid(b * delta) - eps * LogSigmoid(-b * delta);
        dloss_ddelta = -(1 - eps) * b * Sigmoid(-b * delta) + eps * b * Sigmoid(b * delta);
        break;
      case DpoLoss::kIpo: {
        const double d = delta - 1 / (2 * b);
        loss = d * d;
        dloss_ddelta = 2 * d;
        break;
      }
      case DpoLoss::kHinge:
        loss = std::max(0.0, 1 - b * delta);
        dloss_ddelta = 1 - b * delta > 0 ? -b : 0.0;
        break;
    }
    result.loss_sum += loss;
    result.accuracy_sum += delta > 0 ? 1 : 0;
    result.margin_sum += b * delta;
    if (dpc != nullptr) dpc[i] = grad_scale * dloss_ddelta;
    if (dpr != nullptr) dpr[i] = -grad_scale * dloss_ddelta;
  }
  return result;
}

PreferenceResult BradleyTerryLossAndGrad(const double* rw, const double* rl, int64_t pairs, double margin,
                                         double grad_scale, double* dw, double* dl) {
  PreferenceResult result;
  for (int64_t i = 0; i < pairs; ++i) {
    const double x = rw[i] - rl[i] - margin;
    result.loss_sum += -LogSigmoid(x);
    result.accuracy_sum += rw[i] > rl[i] ? 1 : 0;
    result.margin_sum += rw[i] - rl[i];
    const double g = -Sigmoid(-x);  // d(−log σ(x))/dx
    if (dw != nullptr) dw[i] = grad_scale * g;
    if (dl != nullptr) dl[i] = -grad_scale * g;
  }
  return result;
}

}  // namespace loom::kernels::cpu
