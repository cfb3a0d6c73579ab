#include "worker/engine/optimizer.h"

#include <cmath>

#include "kernels/cpu/optimizer.h"

namespace loom::engine {

OptimizerSettings OptimizerSettings::FromProto(const loom::v1::OptimizerConfig& c) {
  OptimizerSettings s;
  s.type =
      c.type() == loom::v1::OptimizerConfig::TYPE_LION ? c.type() : loom::v1::OptimizerConfig::TYPE_ADAMW;
  s.beta1 = static_cast<float>(c.beta1());
  s.beta2 = static_cast<float>(c.beta2());
  s.eps = static_cast<float>(c.eps());
  s.weight_decay = static_cast<float>(c.weight_decay());
  s.grad_clip = static_cast<float>(c.grad_clip());
  return s;
}

Optimizer::Optimizer(const ParameterLayout& layout, OptimizerSettings settings)
    : layout_(layout), settings_(settings), m_(layout.total()) {
  if (has_second_moment()) v_.Resize(layout.total());
}

double GlobalGradNorm(const float* grads, int64_t n) { return std::sqrt(kernels::cpu::SumSquares(grads, n)); }

double Optimizer::Step(float* params, const float* grads, float lr) {
  ++step_;
  const double norm = GlobalGradNorm(grads, layout_.total());
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  float scale = 1.0f;
  if (settings_.grad_clip > 0) {
    const double coef = settings_.grad_clip / (norm + 1e-6);
    if (coef < 1.0) scale = static_cast<float>(coef);
  }
  for (const ParamTensor& t : layout_.tensors()) {
    const float wd = t.decay ? settings_.weight_decay : 0.0f;
    if (settings_.type == loom::v1::OptimizerConfig::TYPE_LION) {
      kernels::cpu::LionStep(params + t.offset, grads + t.offset, m_.data() + t.offset, t.size,
                             {lr, settings_.beta1, settings_.beta2, wd}, scale);
    } else {
      kernels::cpu::AdamWStep(params + t.offset, grads + t.offset, m_.data() + t.offset, v_.data() + t.offset,
                              t.size, {lr, settings_.beta1, settings_.beta2, settings_.eps, wd, step_},
                              scale);
    }
  }
  return norm;
}

}  // namespace loom::engine
