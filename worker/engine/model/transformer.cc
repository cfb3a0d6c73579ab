#include "worker/engine/model/transformer.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/status_macros.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/swiglu.h"
#include "worker/engine/model/random.h"

namespace loom::engine {

namespace k = loom::kernels::cpu;

Transformer::Transformer(TransformerConfig config)
    : config_(std::move(config)), layout_(config_), params_(layout_.total()), grads_(layout_.total()) {}

Transformer::Transformer(TransformerConfig shard_config, Communicator* tensor_parallel)
    : config_(std::move(shard_config)),
      tp_(tensor_parallel != nullptr && tensor_parallel->size() > 1 ? tensor_parallel : nullptr),
      layout_(config_),
      params_(layout_.total()),
      grads_(layout_.total()) {}

absl::Status Transformer::SumOverGroup(float* data, int64_t count) {
  return tp_ ? tp_->AllReduceSum(data, count) : absl::OkStatus();
}

float* Transformer::Forward(const data::TokenBatch& batch) {
  absl::StatusOr<float*> logits = RunForward(batch);
  if (!logits.ok()) {  // only a tensor-parallel model runs collectives; it must call RunForward
    std::fprintf(stderr, "Transformer::Forward: %s\n", std::string(logits.status().message()).c_str());
    std::abort();
  }
  return *logits;
}

void Transformer::Backward(const float* dlogits) {
  if (absl::Status s = RunBackward(dlogits); !s.ok()) {
    std::fprintf(stderr, "Transformer::Backward: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
}

void Transformer::InitWeights(uint64_t seed) {
  Random rng(seed);
  float* p = params_.data();
  for (const ParamTensor& t : layout_.tensors()) {
    if (t.shape.size() == 1) {
      std::fill(p + t.offset, p + t.offset + t.size, 1.0f);  // norm gains
    } else {
      for (int64_t i = 0; i < t.size; ++i) p[t.offset + i] = config_.init_std * rng.NextNormal();
    }
  }
}

const k::RopeTable& Transformer::Rope(int max_position) {
  if (rope_.max_positions <= max_position) {
    // Grow geometrically: positions are bounded by the sequence length, which changes rarely.
    const int size = std::max(max_position + 1, std::max(2 * rope_.max_positions, 256));
    rope_ = k::MakeRopeTable(size, config_.head_dim, config_.rope_theta, config_.rope_position_divisor);
  }
  return rope_;
}

void Transformer::Plan(int batch, int seq_len) {
  if (batch == planned_batch_ && seq_len == planned_seq_) return;
  const int64_t n = int64_t{batch} * seq_len, d = config_.d_model;
  const int64_t q = int64_t{config_.heads} * config_.head_dim,
                kv = int64_t{config_.kv_heads} * config_.head_dim;
  const int64_t f = config_.ffn;
  int64_t offset = 0;
  auto take = [&](int64_t floats) {
    const int64_t at = offset;
    offset += (floats + 15) / 16 * 16;
    return at;
  };
  layer_acts_.clear();
  for (int l = 0; l < config_.layers; ++l) {
    LayerActs a;
    a.x = take(n * d);
    a.h1 = take(n * d);
    a.rstd1 = take(n);
    a.q = take(n * q);
    a.k = take(n * kv);
    a.v = take(n * kv);
    a.attn = take(n * q);
    a.lse = take(int64_t{batch} * config_.heads * seq_len);
    a.x_mid = take(n * d);
    a.h2 = take(n * d);
    a.rstd2 = take(n);
    a.gate = take(n * f);
    a.up = take(n * f);
    a.act = take(n * f);
    layer_acts_.push_back(a);
  }
  x_final_ = take(n * d);
  h_final_ = take(n * d);
  rstd_final_ = take(n);
  logits_ = take(config_.has_head ? n * config_.vocab : 0);
  acts_.Resize(offset);

  offset = 0;
  d_x_ = take(n * d);
  d_h_ = take(n * d);
  d_q_ = take(n * q);
  d_k_ = take(n * kv);
  d_v_ = take(n * kv);
  d_attn_ = take(n * q);
  d_gate_ = take(n * f);
  d_up_ = take(n * f);
  d_act_ = take(n * f);
  scratch_.Resize(offset);
  planned_batch_ = batch;
  planned_seq_ = seq_len;
}

absl::StatusOr<float*> Transformer::RunForward(const data::TokenBatch& batch, const float* input_hidden) {
  const int B = batch.batch_size, T = batch.seq_len;
  Plan(B, T);
  const int64_t n = int64_t{B} * T, d = config_.d_model, f = config_.ffn, V = config_.vocab;
  const int64_t q_dim = int64_t{config_.heads} * config_.head_dim;
  const int64_t kv_dim = int64_t{config_.kv_heads} * config_.head_dim;
  inputs_ = batch.inputs;
  if (batch.positions.empty()) {
    positions_.resize(n);
    for (int64_t i = 0; i < n; ++i) positions_[i] = static_cast<int32_t>(i % T);
  } else {
    positions_ = batch.positions;
  }
  has_segments_ = !batch.segment_ids.empty();
  segments_ = batch.segment_ids;
  const k::RopeTable& rope = Rope(*std::max_element(positions_.begin(), positions_.end()));

  float* A = acts_.data();
  const float* P = params_.data();
  if (!config_.has_embedding) {
    if (input_hidden == nullptr) {
      return absl::FailedPreconditionError("a pipeline stage without the embedding runs on the previous stage's "
                                           "hidden states, and none were given");
    }
    std::copy_n(input_hidden, n * d, A + layer_acts_[0].x);
  } else if (tp_) {
    // Vocabulary-parallel embedding: this rank's rows, zeros for ids it does not hold, summed.
    const int64_t begin = vocab_begin(), end = begin + V;
    float* x0 = A + layer_acts_[0].x;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = inputs_[i];
      if (id >= begin && id < end) {
        std::copy_n(P + layout_.embedding() + (id - begin) * d, d, x0 + i * d);
      } else {
        std::fill_n(x0 + i * d, d, 0.0f);
      }
    }
    LOOM_RETURN_IF_ERROR(SumOverGroup(x0, n * d));
  } else {
    k::EmbeddingForward(inputs_.data(), P + layout_.embedding(), A + layer_acts_[0].x, n, d);
  }
  for (int l = 0; l < config_.layers; ++l) {
    const LayerActs& a = layer_acts_[l];
    const LayerOffsets& w = layout_.layer(l);
    float* x_out = l + 1 < config_.layers ? A + layer_acts_[l + 1].x : A + x_final_;
    k::RmsNormForward(A + a.x, P + w.input_norm, A + a.h1, A + a.rstd1, n, d, config_.norm_eps);
    k::LinearForward(A + a.h1, P + w.q, A + a.q, n, d, q_dim);
    k::LinearForward(A + a.h1, P + w.k, A + a.k, n, d, kv_dim);
    k::LinearForward(A + a.h1, P + w.v, A + a.v, n, d, kv_dim);
    k::RopeForward(A + a.q, positions_.data(), rope, n, config_.heads);
    k::RopeForward(A + a.k, positions_.data(), rope, n, config_.kv_heads);
    const k::AttentionShape shape{
        B, T, config_.heads, config_.kv_heads, config_.head_dim, config_.window_of(l)};
    k::AttentionForward(shape, A + a.q, A + a.k, A + a.v, has_segments_ ? segments_.data() : nullptr,
                        A + a.attn, A + a.lse);
    k::LinearForward(A + a.attn, P + w.o, A + a.x_mid, n, q_dim, d);
    LOOM_RETURN_IF_ERROR(SumOverGroup(A + a.x_mid, n * d));
    k::ParallelFor(n * d, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) A[a.x_mid + i] += A[a.x + i];
    });
    k::RmsNormForward(A + a.x_mid, P + w.post_norm, A + a.h2, A + a.rstd2, n, d, config_.norm_eps);
    k::LinearForward(A + a.h2, P + w.gate, A + a.gate, n, d, f);
    k::LinearForward(A + a.h2, P + w.up, A + a.up, n, d, f);
    k::SwiGluForward(A + a.gate, A + a.up, A + a.act, n * f);
    k::LinearForward(A + a.act, P + w.down, x_out, n, f, d);
    LOOM_RETURN_IF_ERROR(SumOverGroup(x_out, n * d));
    k::ParallelFor(n * d, 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) x_out[i] += A[a.x_mid + i];
    });
  }
  if (!config_.has_head) return A + x_final_;
  k::RmsNormForward(A + x_final_, P + layout_.final_norm(), A + h_final_, A + rstd_final_, n, d,
                    config_.norm_eps);
  k::LinearForward(A + h_final_, P + layout_.lm_head(), A + logits_, n, d, V);
  return A + logits_;
}

absl::Status Transformer::RunBackward(const float* dlogits) {
  const int B = planned_batch_, T = planned_seq_;
  const int64_t n = int64_t{B} * T, d = config_.d_model, f = config_.ffn, V = config_.vocab;
  const int64_t q_dim = int64_t{config_.heads} * config_.head_dim;
  const int64_t kv_dim = int64_t{config_.kv_heads} * config_.head_dim;
  const float* A = acts_.data();
  const float* P = params_.data();
  float* G = grads_.data();
  float* S = scratch_.data();
  const k::RopeTable& rope = rope_;

  // Head and final norm: d_x holds d(loss)/d(residual stream) from here down.
  if (config_.has_head) {
    k::LinearBackward(dlogits, A + h_final_, P + layout_.lm_head(), S + d_h_, G + layout_.lm_head(), n, d, V,
                      false);
    LOOM_RETURN_IF_ERROR(SumOverGroup(S + d_h_, n * d));
    k::RmsNormBackward(S + d_h_, A + x_final_, P + layout_.final_norm(), A + rstd_final_, S + d_x_,
                       G + layout_.final_norm(), n, d, false);
  } else {
    std::copy_n(dlogits, n * d, S + d_x_);  // d(loss)/d(this stage's output), from the next stage
  }
  // Ranges of the layout: embedding | layer 0 | ... | layer L-1 | final norm, head.
  const int64_t layers_end = config_.has_head ? layout_.final_norm() : layout_.total();
  if (on_grads_ready_ && config_.has_head && !config_.tied_embeddings) on_grads_ready_(layers_end, layout_.total());
  for (int l = config_.layers - 1; l >= 0; --l) {
    const LayerActs& a = layer_acts_[l];
    const LayerOffsets& w = layout_.layer(l);
    // MLP: x_out = x_mid + down(act); d_x flows to x_mid unchanged plus through the MLP.
    k::LinearBackward(S + d_x_, A + a.act, P + w.down, S + d_act_, G + w.down, n, f, d, false);
    k::SwiGluBackward(S + d_act_, A + a.gate, A + a.up, S + d_gate_, S + d_up_, n * f);
    k::LinearBackward(S + d_gate_, A + a.h2, P + w.gate, S + d_h_, G + w.gate, n, d, f, false);
    k::LinearBackward(S + d_up_, A + a.h2, P + w.up, S + d_h_, G + w.up, n, d, f, true);
    LOOM_RETURN_IF_ERROR(SumOverGroup(S + d_h_, n * d));
    k::RmsNormBackward(S + d_h_, A + a.x_mid, P + w.post_norm, A + a.rstd2, S + d_x_, G + w.post_norm, n, d,
                       true);
    // Attention: x_mid = x + o_proj(attn).
    k::LinearBackward(S + d_x_, A + a.attn, P + w.o, S + d_attn_, G + w.o, n, q_dim, d, false);
    const k::AttentionShape shape{
        B, T, config_.heads, config_.kv_heads, config_.head_dim, config_.window_of(l)};
    k::AttentionBackward(shape, A + a.q, A + a.k, A + a.v, A + a.attn, A + a.lse, S + d_attn_,
                         has_segments_ ? segments_.data() : nullptr, S + d_q_, S + d_k_, S + d_v_);
    k::RopeBackward(S + d_q_, positions_.data(), rope, n, config_.heads);
    k::RopeBackward(S + d_k_, positions_.data(), rope, n, config_.kv_heads);
    k::LinearBackward(S + d_q_, A + a.h1, P + w.q, S + d_h_, G + w.q, n, d, q_dim, false);
    k::LinearBackward(S + d_k_, A + a.h1, P + w.k, S + d_h_, G + w.k, n, d, kv_dim, true);
    k::LinearBackward(S + d_v_, A + a.h1, P + w.v, S + d_h_, G + w.v, n, d, kv_dim, true);
    LOOM_RETURN_IF_ERROR(SumOverGroup(S + d_h_, n * d));
    k::RmsNormBackward(S + d_h_, A + a.x, P + w.input_norm, A + a.rstd1, S + d_x_, G + w.input_norm, n, d,
                       true);
    if (on_grads_ready_) {
      on_grads_ready_(w.input_norm, l + 1 < config_.layers ? layout_.layer(l + 1).input_norm : layers_end);
    }
  }
  if (!config_.has_embedding) {
    // d_x is d(loss)/d(the received hidden states): input_grad() hands it to the previous stage.
  } else if (tp_) {
    // This rank's vocabulary rows only, in token order (deterministic).
    const int64_t begin = vocab_begin(), end = begin + V;
    float* table = G + layout_.embedding();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = inputs_[i];
      if (id < begin || id >= end) continue;
      float* row = table + (id - begin) * d;
      const float* g = S + d_x_ + i * d;
      for (int64_t j = 0; j < d; ++j) row[j] += g[j];
    }
  } else {
    k::EmbeddingBackward(inputs_.data(), S + d_x_, G + layout_.embedding(), n, d);
  }
  if (on_grads_ready_) {
    // The embedding (a tied one also holds the head's gradient), and a tied model's final norm.
    if (layout_.embedding() >= 0) on_grads_ready_(0, layout_.layer(0).input_norm);
    if (config_.has_head && config_.tied_embeddings) on_grads_ready_(layers_end, layout_.total());
  }
  return absl::OkStatus();
}

}  // namespace loom::engine
