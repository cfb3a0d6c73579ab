#include "worker/engine/model/optimizer.h"

#include <algorithm>
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

Optimizer::Optimizer(const ParameterLayout& layout, OptimizerSettings settings, OptimizerShard shard)
    : layout_(layout),
      settings_(settings),
      begin_(std::clamp<int64_t>(shard.begin, 0, layout.total())),
      end_(shard.end < 0 ? layout.total() : std::clamp<int64_t>(shard.end, begin_, layout.total())),
      m_(end_ - begin_) {
  if (has_second_moment()) v_.Resize(end_ - begin_);
}

double GlobalGradNorm(const float* grads, int64_t n) { return std::sqrt(kernels::cpu::SumSquares(grads, n)); }

double Optimizer::Step(float* params, const float* grads, float lr) {
  const double norm = GlobalGradNorm(grads, layout_.total());
  Update(params, grads, lr, norm);
  return norm;
}

void Optimizer::StepShard(float* params, const float* grads, float lr, double norm) {
  Update(params, grads, lr, norm);
}

void Optimizer::Update(float* params, const float* grads, float lr, double norm) {
  ++step_;
  // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
  float scale = 1.0f;
  if (settings_.grad_clip > 0) {
    const double coef = settings_.grad_clip / (norm + 1e-6);
    if (coef < 1.0) scale = static_cast<float>(coef);
  }
  for (const ParamTensor& t : layout_.tensors()) {
    // The part of the tensor inside the shard (element-wise updates: any split gives the same).
    const int64_t first = std::max(t.offset, begin_), last = std::min(t.offset + t.size, end_);
    if (first >= last) continue;
    const float wd = t.decay ? settings_.weight_decay : 0.0f;
    float* m = m_.data() + (first - begin_);
    if (settings_.type == loom::v1::OptimizerConfig::TYPE_LION) {
      kernels::cpu::LionStep(params + first, grads + first, m, last - first,
                             {lr, settings_.beta1, settings_.beta2, wd}, scale);
    } else {
      kernels::cpu::AdamWStep(params + first, grads + first, m, v_.data() + (first - begin_), last - first,
                              {lr, settings_.beta1, settings_.beta2, settings_.eps, wd, step_}, scale);
    }
  }
}

void Optimizer::CopyShardFrom(const Optimizer& whole) {
  std::copy(whole.m_.data() + begin_, whole.m_.data() + end_, m_.data());
  if (has_second_moment()) std::copy(whole.v_.data() + begin_, whole.v_.data() + end_, v_.data());
  step_ = whole.step_;
}

}  // namespace loom::engine
