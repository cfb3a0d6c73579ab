// Rotary position embedding, in the "rotate half" layout of Hugging Face's Llama: dimension i of
// a head is paired with i + head_dim/2 and the pair is rotated by position · inv_freq[i], with
// inv_freq[i] = theta^(-2i/head_dim). Context extension changes theta (Qwen 2), divides positions
// by a factor (linear position interpolation) or raises theta by factor^(d/(d-2)) (NTK-aware).
#pragma once

#include <cstdint>
#include <vector>

namespace loom::kernels::cpu {

struct RopeTable {
  int head_dim = 0;
  int max_positions = 0;
  // [max_positions, head_dim/2] each.
  std::vector<float> cos, sin;
};

// `position_divisor` is the linear-interpolation factor (1 = none); NTK scaling is applied by the
// caller through `theta`. Angles are computed in double precision.
RopeTable MakeRopeTable(int max_positions, int head_dim, double theta, double position_divisor = 1.0);

// x: [tokens, heads, head_dim], rotated in place. positions: [tokens], each < table.max_positions.
void RopeForward(float* x, const int32_t* positions, const RopeTable& table, int64_t tokens, int heads);

// The inverse rotation, applied in place to the gradient.
void RopeBackward(float* dx, const int32_t* positions, const RopeTable& table, int64_t tokens, int heads);

}  // namespace loom::kernels::cpu
