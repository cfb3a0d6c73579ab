// The optimizer over a model's whole parameter buffer: global-norm gradient clipping, then AdamW
// (decoupled weight decay on the tensors ParameterLayout marks) or Lion. Its state (moments and
// step count) is what a checkpoint must carry for an exact resume.
#pragma once

#include <cstdint>

#include "loom/v1/plan.pb.h"
#include "worker/engine/model/buffer.h"
#include "worker/engine/model/parameters.h"

namespace loom::engine {

struct OptimizerSettings {
  loom::v1::OptimizerConfig::Type type = loom::v1::OptimizerConfig::TYPE_ADAMW;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float grad_clip = 1.0f;  // 0 = no clipping

  // From a resolved stage's optimizer block (plan_resolve.h fills the defaults).
  static OptimizerSettings FromProto(const loom::v1::OptimizerConfig& config);
};

// The parameters [begin, end) whose optimizer state one ZeRO-1 rank owns; end < 0: all of them.
struct OptimizerShard {
  int64_t begin = 0;
  int64_t end = -1;
};

class Optimizer {
 public:
  // Holds moments for the shard's parameters only (ZeRO-1: each data-parallel rank one shard).
  Optimizer(const ParameterLayout& layout, OptimizerSettings settings, OptimizerShard shard = {});

  // Clips `grads` to the global norm (scaling inside the update, grads stay as they are) and
  // updates `params` at learning rate `lr`. Returns the gradient norm before clipping. Needs the
  // whole-buffer shard.
  double Step(float* params, const float* grads, float lr);
  // ZeRO-1: updates params[begin, end) from grads[begin, end), clipping by `norm` (the global
  // gradient norm, which the ranks compute together). Buffers are the whole model's.
  void StepShard(float* params, const float* grads, float lr, double norm);
  int64_t shard_begin() const { return begin_; }
  int64_t shard_end() const { return end_; }
  // This shard's moments and step, taken from an optimizer over the whole buffer (a checkpoint's).
  void CopyShardFrom(const Optimizer& whole);

  int64_t step() const { return step_; }
  void set_step(int64_t step) { step_ = step; }
  const OptimizerSettings& settings() const { return settings_; }
  const ParameterLayout& layout() const { return layout_; }
  // First and second moments (Lion uses only the first), laid out like the parameters of the shard.
  FloatBuffer& first_moment() { return m_; }
  FloatBuffer& second_moment() { return v_; }
  const FloatBuffer& first_moment() const { return m_; }
  const FloatBuffer& second_moment() const { return v_; }
  bool has_second_moment() const { return settings_.type != loom::v1::OptimizerConfig::TYPE_LION; }

 private:
  void Update(float* params, const float* grads, float lr, double norm);

  const ParameterLayout& layout_;
  OptimizerSettings settings_;
  int64_t begin_ = 0, end_ = 0;
  FloatBuffer m_, v_;
  int64_t step_ = 0;
};

// sqrt(Σ g²) over the whole buffer.
double GlobalGradNorm(const float* grads, int64_t n);

}  // namespace loom::engine
