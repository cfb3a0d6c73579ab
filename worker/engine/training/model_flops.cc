#include "worker/engine/training/model_flops.h"

#include <algorithm>

namespace loom::engine {

int64_t NonEmbeddingParameters(const TransformerConfig& model) {
  const int64_t d = model.d_model, q = int64_t{model.heads} * model.head_dim,
                kv = int64_t{model.kv_heads} * model.head_dim;
  // Two RMSNorms, the q/k/v/o projections and SwiGLU's gate, up and down matrices.
  const int64_t per_layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * model.ffn;
  return model.layers * per_layer + d;  // and the final norm
}

double ModelFlopsPerToken(const TransformerConfig& model, int seq_len, ModelPass pass) {
  const double forward_per_parameter = 2.0;
  const double passes = pass == ModelPass::kTraining ? 3.0 : 1.0;  // the backward costs two forwards
  // Attention: q·kᵀ and the weighted sum of v, each 2 x context x (heads x head_dim) per token
  // and layer in the forward.
  double attention = 0;
  const double width = static_cast<double>(model.heads) * model.head_dim;
  for (int layer = 0; layer < model.layers; ++layer) {
    const int window = layer < static_cast<int>(model.local_layer.size()) ? model.window_of(layer) : 0;
    const int context = window > 0 ? std::min(seq_len, window) : seq_len;
    attention += 2.0 * 2.0 * context * width;
  }
  return passes * (forward_per_parameter * static_cast<double>(NonEmbeddingParameters(model)) + attention);
}

}  // namespace loom::engine
