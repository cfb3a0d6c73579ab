// The architecture the engine builds: a plan's ModelConfig (plus a stage's RoPE override)
// resolved into plain numbers, so the hot code never touches protobuf.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/v1/plan.pb.h"

namespace loom::engine {

struct TransformerConfig {
  int layers = 0;
  int d_model = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;  // d_model / heads
  int ffn = 0;
  int vocab = 0;
  // RoPE: base (with NTK scaling already folded in) and linear position divisor.
  double rope_theta = 10000.0;
  double rope_position_divisor = 1.0;
  int sliding_window = 0;         // tokens; 0 = none
  std::vector<bool> local_layer;  // per layer: uses the sliding window
  float norm_eps = 1e-5f;
  bool tied_embeddings = false;
  float init_std = 0.02f;
  int max_seq_len = 0;  // 0 = no limit
  // Pipeline parallelism (pipeline_parallel.h): these `layers` are layers [first_layer,
  // first_layer + layers) of a deeper model; without the embedding the model starts from the
  // previous stage's hidden states, without the head it ends with its own.
  int first_layer = 0;
  bool has_embedding = true;
  bool has_head = true;

  // Resolves a validated ModelConfig; `stage_rope` (context extension) overrides theta/scaling.
  static absl::StatusOr<TransformerConfig> FromProto(const loom::v1::ModelConfig& model,
                                                     const loom::v1::RopeConfig* stage_rope = nullptr);

  int window_of(int layer) const { return local_layer[layer] ? sliding_window : 0; }
  int64_t ParameterCount() const;
  // Training FLOPs per token: 6 x (parameters in matrices) + 6 x layers x d_model x seq_len
  // (attention scores and values, causal, forward + backward), the convention of PaLM / llm.c.
  double TrainingFlopsPerToken(int seq_len) const;
};

}  // namespace loom::engine
