#include "kernels/cpu/cross_entropy.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {
constexpr int64_t kRowGrain = 8;
}

CrossEntropyResult CrossEntropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                                float grad_scale, float* dlogits) {
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* l = logits + r * vocab;
      const int32_t target = targets[r];
      if (target == kIgnoreTarget) {
        if (dlogits != nullptr) {
          float* __restrict d = dlogits + r * vocab;
          for (int64_t v = 0; v < vocab; ++v) d[v] = 0.0f;
        }
        continue;
      }
      const float lse = LogSumExp(l, vocab);
      row_loss[r] = static_cast<double>(lse) - l[target];
      if (dlogits != nullptr) {
        // Reads l[v] before writing d[v]: safe when dlogits == logits.
        const float target_logit = l[target];
        float* d = dlogits + r * vocab;
        for (int64_t v = 0; v < vocab; ++v) d[v] = grad_scale * FastExp(l[v] - lse);
        d[target] = grad_scale * (FastExp(target_logit - lse) - 1.0f);
      }
    }
  });
  CrossEntropyResult result;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] == kIgnoreTarget) continue;
    result.loss_sum += row_loss[r];
    ++result.counted;
  }
  return result;
}

}  // namespace loom::kernels::cpu
