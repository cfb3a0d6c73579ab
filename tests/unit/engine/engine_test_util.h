// Small plans for engine tests, read through the same parser and resolver the coordinator uses.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "common/plan_validation.h"
#include "worker/engine/model/transformer_config.h"

namespace loom::testing {

// A small model for the parallelism tests: 4 heads (2 KV heads) of 8, d_model 32, ffn 48, vocab 64,
// no sliding window; init_std 0.2, large enough that every logit matters.
inline engine::TransformerConfig SmallTransformerConfig(int layers, bool tied) {
  engine::TransformerConfig c;
  c.layers = layers;
  c.d_model = 32;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 8;
  c.ffn = 48;
  c.vocab = 64;
  c.local_layer.assign(layers, false);
  c.tied_embeddings = tied;
  c.init_std = 0.2f;
  return c;
}

// |a − b| / |b| over n floats (norms of the difference and of b): how far a parallel run's
// weights or gradients are from the single-process ones.
inline double RelativeDifference(const float* a, const float* b, int64_t n) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
    norm += double{b[i]} * b[i];
  }
  return std::sqrt(diff / norm);
}

// A byte-level model (vocab 256) and one pretrain stage; `stage_yaml` is spliced into the stage.
inline loom::v1::TrainingPlan TinyPlan(const std::string& stage_yaml, const std::string& model_yaml = "") {
  const std::string text = R"(name: tiny
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 256)" +
                           model_yaml + R"(}
data: {sources: [text]}
stages:
  - name: core
    kind: pretrain
)" + stage_yaml;
  ParsedPlan parsed = ParsePlanText(text, PlanFormat::kYaml);
  EXPECT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors) << text;
  const auto errors = ValidatePlan(parsed.plan);
  EXPECT_TRUE(errors.empty()) << FormatPlanErrors(errors) << text;
  return parsed.plan;
}

inline std::string RepetitiveText() {
  std::string text;
  const char* lines[] = {"the quick brown fox jumps over the lazy dog. ", "a stitch in time saves nine. ",
                         "all that glitters is not gold. "};
  for (int i = 0; i < 200; ++i) text += lines[i % 3];
  return text;
}

}  // namespace loom::testing
