#include "kernels/cpu/rope.h"

#include <cmath>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {

void Rotate(float* x, const int32_t* positions, const RopeTable& table, int64_t tokens, int heads,
            float direction) {
  const int half = table.head_dim / 2;
  ParallelFor(tokens, 64, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* __restrict c = table.cos.data() + static_cast<int64_t>(positions[t]) * half;
      const float* __restrict s = table.sin.data() + static_cast<int64_t>(positions[t]) * half;
      for (int h = 0; h < heads; ++h) {
        float* __restrict a = x + (t * heads + h) * table.head_dim;
        float* __restrict b = a + half;
        for (int i = 0; i < half; ++i) {
          const float x1 = a[i], x2 = b[i], sn = direction * s[i];
          a[i] = x1 * c[i] - x2 * sn;
          b[i] = x2 * c[i] + x1 * sn;
        }
      }
    }
  });
}

}  // namespace

RopeTable MakeRopeTable(int max_positions, int head_dim, double theta, double position_divisor) {
  RopeTable table;
  table.head_dim = head_dim;
  table.max_positions = max_positions;
  const int half = head_dim / 2;
  table.cos.resize(static_cast<size_t>(max_positions) * half);
  table.sin.resize(table.cos.size());
  for (int p = 0; p < max_positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * i / head_dim);
      const double angle = (p / position_divisor) * inv_freq;
      table.cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      table.sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  return table;
}

void RopeForward(float* x, const int32_t* positions, const RopeTable& table, int64_t tokens, int heads) {
  Rotate(x, positions, table, tokens, heads, 1.0f);
}

void RopeBackward(float* dx, const int32_t* positions, const RopeTable& table, int64_t tokens, int heads) {
  Rotate(dx, positions, table, tokens, heads, -1.0f);
}

}  // namespace loom::kernels::cpu
