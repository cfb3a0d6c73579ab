// The four published recipes (examples/plans/*_tiny.yaml) run for real on a coordinator with two
// CPU workers, their pre-training side (`loom submit --until`; post-training is another issue):
// ramps, mix changes, context extension with a raised RoPE base, annealing and checkpoint
// averaging, and distillation from a teacher trained earlier in the same plan.
#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

const std::string& RecipeData() {
  static const std::string dir = PrepareData("recipes", "english,multilingual,code,math", 1024);
  return dir;
}

void RunRecipe(const std::string& plan, const std::string& until, int stages) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = RecipeData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const CommandResult submit =
      cluster.Loom({"submit", SourcePath("examples/plans/" + plan), "--until", until, "--quiet"});
  ASSERT_EQ(submit.exit_code, 0) << submit.err;
  std::string id = submit.out;
  while (!id.empty() && id.back() == '\n') id.pop_back();
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(900));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  ASSERT_EQ(s.jobs_size(), stages);
  for (const auto& job : s.jobs()) {
    EXPECT_TRUE(job.final_checkpoint().final()) << job.DebugString();
    if (job.kind() != loom::v1::STAGE_KIND_AVERAGE) {
      EXPECT_GT(job.progress().step(), 0) << job.DebugString();
      EXPECT_EQ(job.progress().tokens(), job.tokens_budget()) << job.DebugString();
    }
  }
  std::printf("%s\n", cluster.Loom({"status", id}).out.c_str());
}

TEST(Recipes, Llama3PreTrainingSide) { RunRecipe("llama3_tiny.yaml", "anneal_avg", 4); }
TEST(Recipes, Qwen2PreTrainingSide) { RunRecipe("qwen2_tiny.yaml", "long_context", 2); }
TEST(Recipes, AfmPreTrainingSide) { RunRecipe("afm_tiny.yaml", "context", 4); }
TEST(Recipes, Gemma2PreTrainingSide) { RunRecipe("gemma2_tiny.yaml", "student_pretrain", 2); }

}  // namespace
}  // namespace loom::testing
