#include "kernels/cpu/policy_gradient.h"

namespace loom::kernels::cpu {

void RlooAdvantages(const double* rewards, int64_t groups, int k, double* advantages) {
  for (int64_t g = 0; g < groups; ++g) {
    const double* r = rewards + g * k;
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += r[j];
    // a[j] needs only r[j] and the group's sum, so writing in place is safe.
    double* a = advantages + g * k;
    for (int j = 0; j < k; ++j) a[j] = r[j] - (sum - r[j]) / (k - 1);
  }
}

}  // namespace loom::kernels::cpu
