// Shared helpers for the plan tests: a small valid plan to break in one place at a time, and
// lookups over the errors a parse or validation returned.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/plan_error.h"
#include "common/plan_io.h"
#include "loom/v1/plan.pb.h"

namespace loom::testing {

// Valid: a pretrain stage, SFT and DPO from it, and an average of the two.
inline constexpr char kBasePlanYaml[] = R"(name: base
model: {layers: 4, d_model: 256, heads: 8, kv_heads: 2, ffn_size: 704, vocab_size: 8192, max_seq_len: 1024}
models:
  teacher: {layers: 6, d_model: 384, heads: 12, kv_heads: 4, ffn_size: 1024, vocab_size: 8192}
defaults:
  parallel: {dp: 2, micro_batch_size: 4}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 16Ki}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 256}]
  data_mix: [{at_tokens: 0, weights: {english: 1}}]
stages:
  - {name: core, kind: pretrain, tokens: 4M}
  - {name: sft, kind: sft, from: core, dataset: {source: sft_math}}
  - {name: dpo, kind: dpo, from: sft, dataset: {source: prefs_math}}
  - {name: avg, kind: average, average: {checkpoints: [sft, dpo]}}
)";

inline loom::v1::TrainingPlan BasePlan() {
  ParsedPlan parsed = ParsePlanText(kBasePlanYaml, PlanFormat::kYaml);
  EXPECT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  return parsed.plan;
}

inline const PlanError* FindError(const std::vector<PlanError>& errors, const std::string& path) {
  for (const PlanError& e : errors) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

inline std::string ExampleDir() { return std::string(LOOM_SOURCE_DIR) + "/examples/plans"; }

}  // namespace loom::testing
