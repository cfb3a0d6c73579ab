// RMSNorm: out = x / sqrt(mean(x²) + eps) * weight, per row of `dim` values.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// rstd[r] = 1 / sqrt(mean(x[r]²) + eps) is saved for the backward pass.
void RmsNormForward(const float* x, const float* weight, float* out, float* rstd, int64_t rows, int64_t dim,
                    float eps);

// dx = rstd·(dout⊙w) − rstd³·x·mean((dout⊙w)⊙x), written (or added when accumulate_dx);
// dweight += Σ_rows dout⊙x·rstd.
void RmsNormBackward(const float* dout, const float* x, const float* weight, const float* rstd, float* dx,
                     float* dweight, int64_t rows, int64_t dim, bool accumulate_dx);

}  // namespace loom::kernels::cpu
