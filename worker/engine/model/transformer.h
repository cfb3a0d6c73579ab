// A Llama-family decoder with explicit forward and backward passes (no autograd):
//
//   x = embed(tokens)
//   per layer: x += o_proj(attention(rope(q,k), v)) over rmsnorm(x)     (GQA, causal, optional window)
//              x += down(silu(gate(h)) * up(h)),   h = rmsnorm(x)
//   logits = lm_head(rmsnorm(x))                                         (or embedᵀ when tied)
//
// Parameters and their gradients live in two contiguous buffers laid out by ParameterLayout.
// Activations for a (batch, seq_len) shape are planned once into one buffer and reused until the
// shape changes. The loss is not part of the model: Forward returns logits, the caller turns
// them into d(loss)/d(logits) (in place), and Backward takes it from there.
//
// Tensor parallelism (tensor_parallel.h): built with a tensor-parallel group and the rank's shard
// config (TensorParallelConfig), the model holds its heads, its MLP slice and its vocabulary rows;
// the forward all-reduces the embedding and the attention and MLP outputs, the backward the
// gradients entering each column-parallel block, and the logits are this rank's vocabulary columns.
#pragma once

#include <cstdint>
#include <functional>

#include "absl/status/statusor.h"
#include "data/batch.h"
#include "kernels/cpu/rope.h"
#include "worker/engine/model/buffer.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/model/parameters.h"
#include "worker/engine/model/transformer_config.h"

namespace loom::engine {

class Transformer {
 public:
  explicit Transformer(TransformerConfig config);
  // One tensor-parallel rank: `shard_config` is TensorParallelConfig(whole, group->size()); the
  // group (not owned) must outlive the model.
  Transformer(TransformerConfig shard_config, Communicator* tensor_parallel);

  const TransformerConfig& config() const { return config_; }
  const ParameterLayout& layout() const { return layout_; }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  int64_t num_params() const { return layout_.total(); }

  // Normal(0, init_std) for matrices and the embedding, ones for norms; deterministic in seed.
  void InitWeights(uint64_t seed);
  void ZeroGrads() { grads_.Zero(); }

  // Runs the forward pass over `batch` and keeps what Backward needs. Returns the logits
  // [batch_size * seq_len, vocab], owned by the model and valid until the next Forward.
  // Tensor parallel: vocab is this rank's share, and the call fails if a collective does.
  // A pipeline stage (config().has_embedding false) starts from `input_hidden` [tokens, d_model],
  // the previous stage's output; one without the head returns its hidden states [tokens, d_model].
  absl::StatusOr<float*> RunForward(const data::TokenBatch& batch, const float* input_hidden = nullptr);
  // Backpropagates dlogits (which may be the logits buffer returned by Forward, overwritten in
  // place by the loss) through the last Forward, adding the gradients into grads(). A stage
  // without the head takes d(loss)/d(its output) instead.
  absl::Status RunBackward(const float* dlogits);
  // After RunBackward: d(loss)/d(the forward's first hidden states) [tokens, d_model], what a
  // pipeline stage without the embedding sends back to the previous stage.
  const float* input_grad() const { return scratch_.data() + d_x_; }

  // The same for a model without a tensor-parallel group, which cannot fail.
  float* Forward(const data::TokenBatch& batch);
  void Backward(const float* dlogits);

  // Called during RunBackward with each range [begin, end) of grads() whose gradients are complete
  // for this backward: the final norm and head first, then each layer as its backward finishes,
  // the embedding last. Data parallelism sends them while the backward goes on
  // (overlapped_all_reduce.h). Empty: no calls.
  void set_on_grads_ready(std::function<void(int64_t begin, int64_t end)> fn) { on_grads_ready_ = std::move(fn); }

  Communicator* tensor_parallel() const { return tp_; }
  // First vocabulary id of this rank's logits columns (0 without tensor parallelism).
  int64_t vocab_begin() const { return tp_ ? int64_t{tp_->rank()} * config_.vocab : 0; }

  // Bytes of the activation plan for the current shape.
  int64_t activation_bytes() const { return acts_.size() * 4 + scratch_.size() * 4; }

 private:
  void Plan(int batch, int seq_len);
  const kernels::cpu::RopeTable& Rope(int max_position);
  // Tensor parallel: sums `data` over the group (partial outputs of row-parallel blocks forward,
  // gradients entering column-parallel blocks backward); nothing without a group.
  absl::Status SumOverGroup(float* data, int64_t count);

  TransformerConfig config_;
  Communicator* tp_ = nullptr;
  ParameterLayout layout_;
  FloatBuffer params_, grads_;

  // Activation plan (offsets into acts_), for the shape planned_batch_ x planned_seq_.
  int planned_batch_ = 0, planned_seq_ = 0;
  struct LayerActs {
    int64_t x, h1, rstd1, q, k, v, attn, lse, x_mid, h2, rstd2, gate, up, act;
  };
  std::vector<LayerActs> layer_acts_;
  int64_t x_final_ = 0, h_final_ = 0, rstd_final_ = 0, logits_ = 0;
  FloatBuffer acts_;
  // Gradient scratch shared by all layers.
  int64_t d_x_ = 0, d_h_ = 0, d_q_ = 0, d_k_ = 0, d_v_ = 0, d_attn_ = 0, d_gate_ = 0, d_up_ = 0, d_act_ = 0;
  FloatBuffer scratch_;

  // The batch of the last Forward (token ids, positions, segments), needed by Backward.
  std::vector<int32_t> inputs_, positions_, segments_;
  bool has_segments_ = false;
  kernels::cpu::RopeTable rope_;
  std::function<void(int64_t, int64_t)> on_grads_ready_;
};

}  // namespace loom::engine
