// Elementwise math written so that GCC vectorises it (no libm calls in hot loops).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace loom::kernels::cpu {

// e^x for x in [-87, 88], within about 2 ulp of expf (Cody-Waite range reduction and the
// degree-6 minimax polynomial of Cephes' expf). Below -87 it returns ~1e-38, not 0: callers that
// need exact zeros (masked attention) skip those entries instead.
inline float FastExp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

// 1 / (1 + e^-x).
inline float Sigmoid(float x) { return 1.0f / (1.0f + FastExp(-x)); }

// log Σ exp(x[i]) over n values, shifted by the maximum: the softmax normaliser of one row.
inline float LogSumExp(const float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += FastExp(x[i] - max);
  return max + std::log(sum);
}

}  // namespace loom::kernels::cpu
