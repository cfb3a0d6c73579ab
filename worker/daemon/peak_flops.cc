#include "worker/daemon/peak_flops.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/time/clock.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"

namespace loom::worker {

double MeasurePeakFlops(int threads, absl::Duration budget) {
  kernels::cpu::PinBlasToOneThread();
  kernels::cpu::SetNumThreads(std::max(1, threads));
  // 512: large enough for OpenBLAS's blocked kernel to reach its steady rate, small enough
  // (268 MFLOP) that even a slow core finishes a product in well under the budget.
  constexpr int64_t n = 512;
  std::vector<float> a(n * n), b(n * n), c(n * n, 0.0f);
  for (int64_t i = 0; i < n * n; ++i) {
    a[i] = static_cast<float>(i % 7) * 0.25f - 0.75f;
    b[i] = static_cast<float>(i % 5) * 0.5f - 1.0f;
  }
  const double flops = 2.0 * n * n * n;
  double best = 0;
  const absl::Time start = absl::Now();
  // The first product pays for page faults and warming the caches; later ones show the peak.
  for (int run = 0; run < 2 || absl::Now() - start < budget; ++run) {
    const absl::Time t0 = absl::Now();
    kernels::cpu::Gemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - t0);
    best = std::max(best, flops / std::max(seconds, 1e-9));
    if (run >= 50) break;
  }
  return best;
}

double ModelFlopsUtilization(double tokens_per_second, double flops_per_token, int world_size,
                             double peak_flops_per_slot) {
  const bool known =
      tokens_per_second > 0 && flops_per_token > 0 && world_size >= 1 && peak_flops_per_slot > 0;
  if (!known) return 0;
  return tokens_per_second * flops_per_token / (world_size * peak_flops_per_slot);
}

}  // namespace loom::worker
