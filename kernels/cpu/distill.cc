#include "kernels/cpu/distill.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kRowGrain = 4;

// Softmax of x / t into p (double accumulation); returns log Σ exp(x/t) (the log-normaliser).
double Softmax(const float* x, int64_t n, double t, double* p) {
  double max = x[0] / t;
  for (int64_t v = 1; v < n; ++v) max = std::max(max, x[v] / t);
  double sum = 0;
  for (int64_t v = 0; v < n; ++v) sum += (p[v] = std::exp(x[v] / t - max));
  for (int64_t v = 0; v < n; ++v) p[v] /= sum;
  return max + std::log(sum);
}

}  // namespace

DistillResult DistillCrossEntropy(const float* student, const float* teacher, const int32_t* labels,
                                  int64_t rows, int64_t vocab, const DistillOptions& o, float grad_scale,
                                  float* dstudent) {
  std::vector<double> row_distill(rows, 0.0), row_lm(rows, 0.0);
  const double t = o.temperature, lm_w = o.lm_weight, kd_w = 1.0 - o.lm_weight;
  const bool soft = o.mode == DistillOptions::Mode::kSoftCrossEntropy;
  const int64_t k = (soft && o.top_k > 0 && o.top_k < vocab) ? o.top_k : 0;
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    std::vector<double> ps(vocab), pt(vocab), ps1(vocab), grad(vocab);
    std::vector<int32_t> order(vocab);
    std::vector<char> in_top(vocab);
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = student + r * vocab;
      const float* te = teacher + r * vocab;
      const int32_t label = labels[r];
      if (label == kIgnoreTarget) {
        if (dstudent != nullptr) std::fill(dstudent + r * vocab, dstudent + (r + 1) * vocab, 0.0f);
        continue;
      }
      // Plain LM term at temperature 1: grad p_S − onehot(label).
      const double lse1 = Softmax(s, vocab, 1.0, ps1.data());
      row_lm[r] = lse1 - s[label];
      for (int64_t v = 0; v < vocab; ++v) grad[v] = lm_w * ps1[v];
      grad[label] -= lm_w;

      if (soft) {
        const double lse_s = Softmax(s, vocab, t, ps.data());
        Softmax(te, vocab, t, pt.data());
        double loss = 0;
        if (k == 0) {
          // −Σ p_T log p_S; d/ds = (p_S − p_T) / T.
          for (int64_t v = 0; v < vocab; ++v) {
            if (pt[v] > 0) loss -= pt[v] * (s[v] / t - lse_s);
            grad[v] += kd_w * (ps[v] - pt[v]) / t;
          }
        } else {
          std::iota(order.begin(), order.end(), 0);
          std::partial_sort(order.begin(), order.begin() + k, order.end(),
                            [&](int32_t a, int32_t b) { return te[a] > te[b] || (te[a] == te[b] && a < b); });
          std::fill(in_top.begin(), in_top.end(), 0);
          double top_t = 0, top_s = 0;
          for (int64_t i = 0; i < k; ++i) {
            const int32_t v = order[i];
            in_top[v] = 1;
            top_t += pt[v];
            top_s += ps[v];
            if (pt[v] > 0) loss -= pt[v] * (s[v] / t - lse_s);
          }
          const double tail_t = std::max(0.0, 1.0 - top_t), tail_s = std::max(1e-300, 1.0 - top_s);
          if (tail_t > 0) loss -= tail_t * std::log(tail_s);
          // Grouped categorical: d/ds_v = p_S(v) − t_g(v) · p_S(v) / q_g(v), then / T.
          for (int64_t v = 0; v < vocab; ++v) {
            const double g = in_top[v] ? ps[v] - pt[v] : ps[v] * (1.0 - tail_t / tail_s);
            grad[v] += kd_w * g / t;
          }
        }
        row_distill[r] = loss;
      } else {
        // AFM: target w·onehot(top1) + (1−w)·onehot(label), at temperature 1.
        const int32_t top1 = static_cast<int32_t>(std::max_element(te, te + vocab) - te);
        const double w = o.teacher_weight;
        row_distill[r] = w * (lse1 - s[top1]) + (1 - w) * (lse1 - s[label]);
        for (int64_t v = 0; v < vocab; ++v) grad[v] += kd_w * ps1[v];
        grad[top1] -= kd_w * w;
        grad[label] -= kd_w * (1 - w);
      }
      if (dstudent != nullptr) {
        float* d = dstudent + r * vocab;
        for (int64_t v = 0; v < vocab; ++v) d[v] = static_cast<float>(grad_scale * grad[v]);
      }
    }
  });
  DistillResult result;
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[r] == kIgnoreTarget) continue;
    result.distill_sum += row_distill[r];
    result.lm_sum += row_lm[r];
    result.loss_sum += kd_w * row_distill[r] + lm_w * row_lm[r];
    ++result.counted;
  }
  return result;
}

}  // namespace loom::kernels::cpu
