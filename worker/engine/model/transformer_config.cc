#include "worker/engine/model/transformer_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/plan_resolve.h"

namespace loom::engine {

absl::StatusOr<TransformerConfig> TransformerConfig::FromProto(const loom::v1::ModelConfig& raw,
                                                               const loom::v1::RopeConfig* stage_rope) {
  loom::v1::ModelConfig m = raw;
  ApplyModelDefaults(&m);
  if (m.layers() < 1 || m.heads() < 1 || m.d_model() % m.heads() != 0 || m.kv_heads() < 1 ||
      m.heads() % m.kv_heads() != 0 || m.vocab_size() < 2 || m.ffn_size() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("model config is not valid (validate the plan first): ", m.ShortDebugString()));
  }
  TransformerConfig c;
  c.layers = m.layers();
  c.d_model = m.d_model();
  c.heads = m.heads();
  c.kv_heads = m.kv_heads();
  c.head_dim = m.d_model() / m.heads();
  c.ffn = m.ffn_size();
  c.vocab = m.vocab_size();
  c.norm_eps = static_cast<float>(m.norm_eps());
  c.tied_embeddings = m.tied_embeddings();
  c.init_std = static_cast<float>(m.init_std());
  c.max_seq_len = m.max_seq_len();
  c.sliding_window = m.sliding_window();
  c.local_layer.assign(c.layers, false);
  if (c.sliding_window > 0) {
    if (m.sliding_window_layers_size() > 0) {
      for (int l : m.sliding_window_layers()) c.local_layer[l] = true;
    } else {
      for (int l = 0; l < c.layers; ++l) {
        c.local_layer[l] = m.sliding_window_period() > 0 ? l % m.sliding_window_period() == 0 : true;
      }
    }
  }
  double theta = m.rope_theta();
  loom::v1::RopeScaling scaling = m.rope_scaling();
  if (stage_rope != nullptr) {
    if (stage_rope->has_theta()) theta = stage_rope->theta();
    if (stage_rope->has_scaling()) scaling = stage_rope->scaling();
  }
  c.rope_theta = theta;
  if (scaling.type() == loom::v1::RopeScaling::TYPE_LINEAR) {
    c.rope_position_divisor = scaling.factor();
  } else if (scaling.type() == loom::v1::RopeScaling::TYPE_NTK) {
    // NTK-aware: stretch the base so the lowest frequency covers `factor` times the context.
    c.rope_theta = theta * std::pow(scaling.factor(), static_cast<double>(c.head_dim) / (c.head_dim - 2));
  }
  return c;
}

int64_t TransformerConfig::ParameterCount() const {
  const int64_t d = d_model, q = int64_t{heads} * head_dim, kv = int64_t{kv_heads} * head_dim;
  const int64_t per_layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * ffn;
  return int64_t{vocab} * d * (tied_embeddings ? 1 : 2) + layers * per_layer + d;
}

double TransformerConfig::TrainingFlopsPerToken(int seq_len) const {
  const double d = d_model, q = double{1.0} * heads * head_dim, kv = double{1.0} * kv_heads * head_dim;
  const double matrices = layers * (d * q + 2 * d * kv + q * d + 3 * d * ffn) + double{1.0} * vocab * d;
  return 6.0 * matrices + 6.0 * layers * q * seq_len;
}

}  // namespace loom::engine
