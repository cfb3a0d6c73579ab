#include "kernels/cpu/optimizer.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {
constexpr int64_t kGrain = 1 << 15;
}

void AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& h,
               float grad_scale) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step));
  const float step_size = static_cast<float>(h.lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - h.lr * h.weight_decay;
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    float* __restrict p = param;
    const float* __restrict g = grad;
    float* __restrict mm = m;
    float* __restrict vv = v;
    for (int64_t i = i0; i < i1; ++i) {
      const float gi = g[i] * grad_scale;
      p[i] *= decay;
      mm[i] = h.beta1 * mm[i] + (1.0f - h.beta1) * gi;
      vv[i] = h.beta2 * vv[i] + (1.0f - h.beta2) * gi * gi;
      p[i] -= step_size * mm[i] / (std::sqrt(vv[i]) * inv_sqrt_bc2 + h.eps);
    }
  });
}

void LionStep(float* param, const float* grad, float* m, int64_t n, const LionHyper& h, float grad_scale) {
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    float* __restrict p = param;
    const float* __restrict g = grad;
    float* __restrict mm = m;
    for (int64_t i = i0; i < i1; ++i) {
      const float gi = g[i] * grad_scale;
      const float c = h.beta1 * mm[i] + (1.0f - h.beta1) * gi;
      const float sign = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
      p[i] -= h.lr * (sign + h.weight_decay * p[i]);
      mm[i] = h.beta2 * mm[i] + (1.0f - h.beta2) * gi;
    }
  });
}

double SumSquares(const float* x, int64_t n) {
  std::vector<double> partial(static_cast<size_t>(NumChunks(n, kGrain)), 0.0);
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    double sum = 0.0;
    for (int64_t i = i0; i < i1; ++i) sum += static_cast<double>(x[i]) * x[i];
    partial[i0 / kGrain] = sum;
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

void Scale(float* x, int64_t n, float s) {
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] *= s;
  });
}

}  // namespace loom::kernels::cpu
