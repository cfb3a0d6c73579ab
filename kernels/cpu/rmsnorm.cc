#include "kernels/cpu/rmsnorm.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {
constexpr int64_t kRowGrain = 32;
}

void RmsNormForward(const float* x, const float* weight, float* out, float* rstd, int64_t rows, int64_t dim,
                    float eps) {
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict xr = x + r * dim;
      float* __restrict yr = out + r * dim;
      float sum = 0.0f;
      for (int64_t i = 0; i < dim; ++i) sum += xr[i] * xr[i];
      const float s = 1.0f / std::sqrt(sum / static_cast<float>(dim) + eps);
      rstd[r] = s;
      for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * s * weight[i];
    }
  });
}

void RmsNormBackward(const float* dout, const float* x, const float* weight, const float* rstd, float* dx,
                     float* dweight, int64_t rows, int64_t dim, bool accumulate_dx) {
  // dweight partials per chunk, summed in chunk order: independent of the thread count.
  const int64_t chunks = NumChunks(rows, kRowGrain);
  std::vector<float> partial(static_cast<size_t>(chunks * dim), 0.0f);
  ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    float* __restrict dw = partial.data() + (r0 / kRowGrain) * dim;
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict xr = x + r * dim;
      const float* __restrict gr = dout + r * dim;
      float* __restrict dxr = dx + r * dim;
      const float s = rstd[r];
      float dot = 0.0f;
      for (int64_t i = 0; i < dim; ++i) dot += gr[i] * weight[i] * xr[i];
      const float c = s * s * s * dot / static_cast<float>(dim);
      if (accumulate_dx) {
        for (int64_t i = 0; i < dim; ++i) dxr[i] += s * gr[i] * weight[i] - c * xr[i];
      } else {
        for (int64_t i = 0; i < dim; ++i) dxr[i] = s * gr[i] * weight[i] - c * xr[i];
      }
      for (int64_t i = 0; i < dim; ++i) dw[i] += gr[i] * xr[i] * s;
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    const float* p = partial.data() + c * dim;
    for (int64_t i = 0; i < dim; ++i) dweight[i] += p[i];
  }
}

}  // namespace loom::kernels::cpu
