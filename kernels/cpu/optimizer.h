// Optimizer update kernels on flat fp32 arrays. The engine calls them per parameter tensor
// (weight decay differs between tensors) on its one contiguous parameter buffer.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

struct AdamWHyper {
  float lr = 0;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0;  // decoupled: p -= lr * wd * p
  int64_t step = 1;        // 1-based, for bias correction
};

// PyTorch's AdamW, term for term: p -= lr·wd·p; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
// p -= (lr / (1−β1^t)) · m / (sqrt(v) / sqrt(1−β2^t) + eps). `grad_scale` multiplies g first
// (gradient clipping).
void AdamWStep(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWHyper& hyper,
               float grad_scale);

struct LionHyper {
  float lr = 0;
  float beta1 = 0.9f, beta2 = 0.99f;
  float weight_decay = 0;
};

// Lion (Chen et al. 2023): p -= lr·(sign(β1·m + (1−β1)·g) + wd·p); m = β2·m + (1−β2)·g.
void LionStep(float* param, const float* grad, float* m, int64_t n, const LionHyper& hyper, float grad_scale);

// Σ x², accumulated per chunk in double and summed in chunk order (deterministic).
double SumSquares(const float* x, int64_t n);

// x *= s.
void Scale(float* x, int64_t n, float s);

}  // namespace loom::kernels::cpu
