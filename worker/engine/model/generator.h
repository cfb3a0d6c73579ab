// Autoregressive generation with a key/value cache: a batch of prompts is decoded in lockstep,
// one position per step (a sequence still in its prompt feeds its next prompt token, the others
// their last sample), so decoding costs one token's forward pass per sequence per step, with no
// Python and no re-reading of the prefix. Sampling: greedy, or temperature with top-k and top-p.
#pragma once

#include <cstdint>
#include <vector>

#include "worker/engine/model/buffer.h"
#include "worker/engine/model/random.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int top_k = 0;             // keep the k most likely tokens; 0 = all
  float top_p = 1.0f;        // keep the smallest set whose probability reaches top_p
  int max_new_tokens = 64;
  int32_t stop_token = -1;  // end a sequence when it samples this token (kept in the output); -1 = none
  uint64_t seed = 0;        // sequence b samples from Random(seed + b)
};

class Generator {
 public:
  // Reads `model`'s parameters (which must outlive the generator); batch and length are upper
  // bounds for the cache.
  Generator(const Transformer& model, int max_batch, int max_len);

  // Forgets the cache: the next Step is position 0 for `batch` sequences.
  void Reset(int batch);

  // Feeds one token per sequence at the next position; returns the logits [batch, vocab] for
  // the token that follows (owned by the generator, valid until the next call).
  const float* Step(const int32_t* tokens);
  int position() const { return position_; }

  // Continues each prompt (each non-empty); returns the new tokens of each, stopping at
  // stop_token or max_new_tokens.
  std::vector<std::vector<int32_t>> Generate(const std::vector<std::vector<int32_t>>& prompts,
                                             const SamplingOptions& options);

 private:
  int32_t Sample(const float* logits, const SamplingOptions& options, Random& rng);

  const Transformer& model_;
  const TransformerConfig& c_;
  int max_batch_, max_len_;
  int batch_ = 0, position_ = 0;
  FloatBuffer k_cache_, v_cache_;  // [layers, batch, max_len, kv_heads, head_dim]
  FloatBuffer x_, h_, q_, k_, v_, attn_, tmp_, gate_, up_, rstd_, logits_;
  kernels::cpu::RopeTable rope_;
  std::vector<float> probs_;
  std::vector<int32_t> order_;
};

}  // namespace loom::engine
