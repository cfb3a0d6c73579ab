// The four published recipes (examples/plans/*_tiny.yaml) run for real on a coordinator with two
// CPU workers: ramps, mix changes, context extension with a raised RoPE base, annealing and
// checkpoint averaging, and distillation from a teacher trained earlier in the same plan — and
// then their post-training, whole: Llama 3.1's rounds (a repeat block: reward model, rejection
// sampling scored by it, SFT, DPO, twice, then the rounds averaged); Qwen 2's SFT, offline DPO,
// reward model and online DPO; AFM's SFT, reward model, rejection-sampling fine-tuning and RLOO;
// Gemma 2's SFT, a reward model of the larger model, two RL runs merged (WARP). Each ends in an
// eval stage.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

const std::string& RecipeData() {
  static const std::string dir =
      // Post-training sets sized for a CI run: 240 chat problems, 160 preference pairs (a tenth of
      // each source held out, so eval stages and reward models have some to measure).
      PrepareData("recipes", "english,multilingual,code,math,sft_math,prefs_math", 1024,
                  "--sft-docs 240 --prefs-docs 160 --heldout 0.1");
  return dir;
}

// `until` empty: the whole plan.
void RunRecipe(const std::string& plan, const std::string& until, int stages) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = RecipeData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  std::vector<std::string> args = {"submit", SourcePath("examples/plans/" + plan), "--quiet"};
  if (!until.empty()) args.insert(args.end(), {"--until", until});
  const CommandResult submit = cluster.Loom(args);
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  std::string id = submit.out;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(900));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  ASSERT_EQ(s.jobs_size(), stages);
  for (const auto& job : s.jobs()) {
    // Stages of a repeat block carry their round (`<stage>.r<round>`).
    const size_t dot = job.stage().rfind(".r");
    EXPECT_EQ(job.round(), dot == std::string::npos ? 0 : std::stoi(job.stage().substr(dot + 2))) << job.stage();
    if (job.kind() == loom::v1::STAGE_KIND_EVAL) {  // measurements, no checkpoint
      EXPECT_FALSE(job.eval_loss().empty()) << job.DebugString();
      continue;
    }
    if (job.kind() == loom::v1::STAGE_KIND_REJECTION_SAMPLING) {  // a dataset, no training steps
      EXPECT_TRUE(job.final_checkpoint().final()) << job.DebugString();
      EXPECT_GT(job.eval_metrics().at("rs/prompts"), 0) << job.DebugString();
      EXPECT_GT(job.eval_metrics().at("rs/kept"), 0) << job.DebugString();
      continue;
    }
    EXPECT_TRUE(job.final_checkpoint().final()) << job.DebugString();
    if (job.kind() != loom::v1::STAGE_KIND_AVERAGE && job.kind() != loom::v1::STAGE_KIND_MERGE) {
      EXPECT_GT(job.progress().step(), 0) << job.DebugString();
      // Stages with a token budget reach it; dataset stages end after their epochs.
      if (job.tokens_budget() > 0) {
        EXPECT_EQ(job.progress().tokens(), job.tokens_budget()) << job.DebugString();
      }
    }
  }
  std::printf("%s\n", cluster.Loom({"status", id}).out.c_str());
  // Where the time went: each job from placement to its end.
  for (const auto& job : s.jobs()) {
    int64_t placed = 0, ended = 0;
    for (const auto& t : job.transitions()) {
      if (t.to_state() == loom::v1::JOB_STATE_SCHEDULED && placed == 0) placed = t.time_ms();
      ended = t.time_ms();
    }
    std::printf("  %-14s %6.1f s\n", job.stage().c_str(), (ended - placed) / 1000.0);
  }
}

TEST(Recipes, Llama3Whole) { RunRecipe("llama3_tiny.yaml", "", 14); }
TEST(Recipes, Qwen2Whole) { RunRecipe("qwen2_tiny.yaml", "", 7); }
TEST(Recipes, AfmWhole) { RunRecipe("afm_tiny.yaml", "", 10); }
TEST(Recipes, Gemma2Whole) { RunRecipe("gemma2_tiny.yaml", "", 9); }

}  // namespace
}  // namespace loom::testing
