#include "kernels/cpu/swiglu.h"

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace loom::kernels::cpu {
namespace {
constexpr int64_t kGrain = 1 << 14;
}

void SwiGluForward(const float* gate, const float* up, float* out, int64_t n) {
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    const float* __restrict g = gate;
    const float* __restrict u = up;
    float* __restrict o = out;
    for (int64_t i = i0; i < i1; ++i) o[i] = g[i] * Sigmoid(g[i]) * u[i];
  });
}

void SwiGluBackward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n) {
  ParallelFor(n, kGrain, [&](int64_t i0, int64_t i1) {
    const float* __restrict d = dout;
    const float* __restrict g = gate;
    const float* __restrict u = up;
    float* __restrict dg = dgate;
    float* __restrict du = dup;
    for (int64_t i = i0; i < i1; ++i) {
      const float s = Sigmoid(g[i]);
      const float silu = g[i] * s;
      dg[i] = d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
      du[i] = d[i] * silu;
    }
  });
}

}  // namespace loom::kernels::cpu
