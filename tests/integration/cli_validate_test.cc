// Runs the real `loom` binary: `loom validate` on the example plans and on a broken plan.
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "run_command.h"

namespace {

using Result = loom::testing::CommandResult;

Result RunLoom(const std::string& args) {
  return loom::testing::RunCommand(std::string(LOOM_CLI) + " " + args);
}

std::string Example(const std::string& name) {
  return std::string(LOOM_SOURCE_DIR) + "/examples/plans/" + name;
}

TEST(LoomValidate, PrintsOkAndASummaryForEachRecipe) {
  for (const char* plan : {"llama3_tiny.yaml", "qwen2_tiny.yaml", "afm_tiny.yaml", "gemma2_tiny.yaml"}) {
    const Result r = RunLoom("validate " + Example(plan));
    EXPECT_EQ(r.exit_code, 0) << plan << "\n" << r.output;
    EXPECT_EQ(r.output.rfind("ok\n", 0), 0u) << r.output;
    EXPECT_NE(r.output.find("model: "), std::string::npos) << r.output;
  }
  const Result llama = RunLoom("validate " + Example("llama3_tiny.yaml"));
  // The summary shows the ramps and the mix change.
  EXPECT_NE(llama.output.find("8Ki>16Ki@32Ki>32Ki@96Ki"), std::string::npos) << llama.output;
  EXPECT_NE(llama.output.find("256>512@32Ki"), std::string::npos) << llama.output;
  EXPECT_NE(llama.output.find("@128Ki english 0.40 code 0.30 math 0.20 multilingual 0.10"), std::string::npos)
      << llama.output;
}

TEST(LoomValidate, BrokenPlanPrintsEveryErrorAndExitsOne) {
  const std::string path = ::testing::TempDir() + "/broken.yaml";
  {
    std::ofstream out(path);
    out << R"(name: broken
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 3, ffn_size: 128, vocab_size: 256}
stages:
  - name: core
    kind: pretrain
    tokens: 1M
    optimizer: {lr: 1e-3}
    batch_ramp:
      - {at_tokens: 0, global_batch_tokens: 4Ki}
      - {at_tokens: 800K, global_batch_tokens: 8Ki}
      - {at_tokens: 500K, global_batch_tokens: 16Ki}
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {english: 1, wiki: 1}}]
  - name: sft
    kind: sft
    from: cor
    dataset: {source: sft_math}
    optimizer: {lr: 1e-4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 4Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
)";
  }
  const Result r = RunLoom("validate " + path);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("4 errors in " + path), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(path + ":2:53: model.kv_heads: heads (4) is not a multiple of kv_heads (3)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(
      r.output.find(path + ":11:21: stages[0].batch_ramp[2].at_tokens: 500000 is not after the previous "
                           "entry (800000)"),
      std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("stages[0].data_mix[0].weights.wiki: 'wiki' is not a known source"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("stages[1].from: 'cor' is not a stage of this plan (hint: did you mean 'core'?)"),
            std::string::npos)
      << r.output;
}

TEST(LoomValidate, UsageErrors) {
  EXPECT_EQ(RunLoom("validate").exit_code, 2);
  EXPECT_EQ(RunLoom("valdate x").exit_code, 2);
  const Result unknown = RunLoom("valdate x");
  EXPECT_NE(unknown.output.find("did you mean 'validate'?"), std::string::npos) << unknown.output;
  const Result missing = RunLoom("validate /nonexistent.yaml");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("cannot open plan file /nonexistent.yaml"), std::string::npos)
      << missing.output;
}

TEST(LoomValidate, HelpEverywhere) {
  const Result top = RunLoom("--help");
  EXPECT_EQ(top.exit_code, 0);
  EXPECT_NE(top.output.find("validate"), std::string::npos);
  const Result sub = RunLoom("validate --help");
  EXPECT_EQ(sub.exit_code, 0);
  EXPECT_NE(sub.output.find("usage: loom validate"), std::string::npos) << sub.output;
}

}  // namespace
