#include "kernels/cpu/log_probs.h"

#include <cmath>

#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {
constexpr int64_t kRowGrain = 8;
}  // namespace

void TokenLogProbs(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab, float* out) {
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      out[r] = targets[r] == kIgnoreTarget
                   ? 0.0f
                   : logits[r * vocab + targets[r]] - LogSumExp(logits + r * vocab, vocab);
    }
  });
}

void TokenLogProbsBackward(const float* logits, const int32_t* targets, const float* grad, int64_t rows,
                           int64_t vocab, float* dlogits) {
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* l = logits + r * vocab;
      float* d = dlogits + r * vocab;
      const int32_t target = targets[r];
      if (target == kIgnoreTarget || grad[r] == 0.0f) {
        for (int64_t v = 0; v < vocab; ++v) d[v] = 0.0f;
        continue;
      }
      const float lse = LogSumExp(l, vocab), g = grad[r];
      // Reads l[v] before writing d[v]: safe when dlogits == logits.
      for (int64_t v = 0; v < vocab; ++v) d[v] = -g * FastExp(l[v] - lse);
      d[target] += g;
    }
  });
}

}  // namespace loom::kernels::cpu
