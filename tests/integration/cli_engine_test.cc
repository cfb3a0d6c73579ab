// Runs the real `loom` binary's engine commands: train-local prints one loss per step, a run
// resumed from its checkpoint prints the uninterrupted run's losses, and a checkpoint goes
// through export-hf / import-hf and generates the same tokens before and after.
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "run_command.h"

namespace {
namespace fs = std::filesystem;
using loom::testing::CommandResult;

CommandResult RunLoom(const std::string& args) {
  return loom::testing::RunCommand(std::string(LOOM_CLI) + " " + args);
}

constexpr char kPlan[] = R"(name: bytes
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 256}
data: {sources: [text]}
stages:
  - name: core
    kind: pretrain
    tokens: 200K
    optimizer: {lr: 3e-3}
    lr_schedule: {type: cosine, warmup_tokens: 2Ki}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}, {at_tokens: 6Ki, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 6, keep_last: 3}
)";

// kPlan's stage with evaluations, and an SFT stage after it.
constexpr char kTwoKindsPlan[] = R"(name: kinds
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 256}
data: {sources: [text]}
stages:
  - name: core
    kind: pretrain
    tokens: 4Ki
    optimizer: {lr: 3e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    eval: {every_steps: 2, sets: [text]}
  - name: chat
    kind: sft
    from: core
    tokens: 2Ki
    dataset: {source: text}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
)";

struct Fixture {
  std::string dir, plan, text;
};

Fixture MakeFixture(const std::string& name) {
  Fixture f;
  f.dir = ::testing::TempDir() + "/cli_engine_" + name;
  fs::remove_all(f.dir);
  fs::create_directories(f.dir);
  f.plan = f.dir + "/plan.yaml";
  std::ofstream(f.plan) << kPlan;
  f.text = f.dir + "/text.txt";
  std::ofstream text(f.text);
  for (int i = 0; i < 300; ++i)
    text << "the quick brown fox jumps over the lazy dog. pack my box with five dozen jugs. ";
  return f;
}

// The "step N ... loss X" lines, without the timing columns.
std::vector<std::string> LossLines(const std::string& output) {
  std::vector<std::string> lines;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("step ", 0) != 0) continue;
    lines.push_back(line.substr(0, line.find("  lr ")));
  }
  return lines;
}

TEST(LoomTrainLocal, ResumedRunPrintsTheUninterruptedLossesBitwise) {
  const Fixture f = MakeFixture("resume");
  const CommandResult full = RunLoom("train-local " + f.plan + " --text " + f.text + " --steps 14");
  ASSERT_EQ(full.exit_code, 0) << full.output;
  const std::vector<std::string> full_losses = LossLines(full.output);
  ASSERT_EQ(full_losses.size(), 14u) << full.output;

  const CommandResult first =
      RunLoom("train-local " + f.plan + " --text " + f.text + " --steps 6 --out " + f.dir + "/ckpt");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  ASSERT_TRUE(fs::exists(f.dir + "/ckpt/step-000006/manifest.json")) << first.output;
  const CommandResult rest = RunLoom("train-local " + f.plan + " --text " + f.text + " --steps 14 --resume " +
                                     f.dir + "/ckpt/step-000006");
  ASSERT_EQ(rest.exit_code, 0) << rest.output;
  std::vector<std::string> resumed = LossLines(first.output);
  for (const std::string& line : LossLines(rest.output)) resumed.push_back(line);
  EXPECT_EQ(resumed, full_losses);
}

TEST(LoomTrainLocal, ExportImportAndGenerate) {
  const Fixture f = MakeFixture("export");
  const CommandResult train =
      RunLoom("train-local " + f.plan + " --text " + f.text + " --steps 12 --out " + f.dir + "/ckpt");
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string ckpt = f.dir + "/ckpt/step-000012";
  const CommandResult exported = RunLoom("export-hf " + ckpt + " " + f.dir + "/hf");
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_TRUE(fs::exists(f.dir + "/hf/config.json"));
  // train-local reads bytes, so the checkpoint records no tokenizer: the export says so.
  EXPECT_NE(exported.output.find("records no tokenizer"), std::string::npos) << exported.output;
  const CommandResult sharded =
      RunLoom("export-hf " + ckpt + " " + f.dir + "/hf16 --dtype bf16 --max-shard-size 16Ki");
  ASSERT_EQ(sharded.exit_code, 0) << sharded.output;
  EXPECT_TRUE(fs::exists(f.dir + "/hf16/model.safetensors.index.json"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(f.dir + "/hf16")) {
    shards += e.path().filename().string().starts_with("model-0000");
  }
  EXPECT_GT(shards, 1);
  const CommandResult imported16 = RunLoom("import-hf " + f.dir + "/hf16 " + f.dir + "/back16");
  EXPECT_EQ(imported16.exit_code, 0) << imported16.output;
  const CommandResult bad = RunLoom("export-hf " + ckpt + " " + f.dir + "/hf8 --dtype f8");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--dtype 'f8': use f32 or bf16"), std::string::npos) << bad.output;
  const CommandResult imported = RunLoom("import-hf " + f.dir + "/hf " + f.dir + "/back");
  ASSERT_EQ(imported.exit_code, 0) << imported.output;

  const CommandResult before = RunLoom("generate " + ckpt + " --prompt 'the quick' --max-new-tokens 16");
  const CommandResult after = RunLoom("generate " + f.dir + "/back --prompt 'the quick' --max-new-tokens 16");
  ASSERT_EQ(before.exit_code, 0) << before.output;
  EXPECT_EQ(before.output.rfind("the quick", 0), 0u) << before.output;
  EXPECT_GT(before.output.size(), 20u);
  EXPECT_EQ(before.output, after.output);
}

TEST(LoomTrainLocal, BadInputIsNamed) {
  const Fixture f = MakeFixture("bad");
  CommandResult r = RunLoom("train-local " + f.plan + " --text " + f.text + " --stage nope");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no stage 'nope' (stages: core)"), std::string::npos) << r.output;
  r = RunLoom("train-local " + f.plan);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--text"), std::string::npos) << r.output;
  r = RunLoom("generate " + f.dir + "/missing --prompt hi");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("missing"), std::string::npos) << r.output;
  // A text file stands in for a pre-training stage's data mix only; its evaluations are skipped.
  const std::string kinds = f.dir + "/kinds.yaml";
  std::ofstream(kinds) << kTwoKindsPlan;
  r = RunLoom("train-local " + kinds + " --text " + f.text + " --stage chat");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("stage 'chat': a token stream stands in for the data mix of a pre-training stage only"),
            std::string::npos)
      << r.output;
  r = RunLoom("train-local " + kinds + " --text " + f.text + " --steps 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("eval: skipped (--text has no held-out data"), std::string::npos) << r.output;
  r = RunLoom("train-local --help");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.output.find("--resume"), std::string::npos) << r.output;
}

}  // namespace
