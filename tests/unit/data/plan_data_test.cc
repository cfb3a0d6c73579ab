#include "data/plan_data.h"

#include <string>

#include "common/plan_io.h"
#include "common/sha256.h"
#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using ::testing::HasSubstr;

TEST(PlanData, StageMixBecomesTheSamplerSchedule) {
  auto plan = LoadPlan(std::string(LOOM_SOURCE_DIR) + "/examples/plans/llama3_tiny.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const loom::v1::Stage& core = plan->stages(0);
  ASSERT_GE(core.data_mix_size(), 2);
  const std::vector<MixPoint> mix = MixSchedule(core);
  ASSERT_EQ(mix.size(), static_cast<size_t>(core.data_mix_size()));
  EXPECT_EQ(mix[0].at_tokens, 0);
  EXPECT_EQ(mix[1].at_tokens, core.data_mix(1).at_tokens());
  EXPECT_EQ(mix[1].weights.size(), static_cast<size_t>(core.data_mix(1).weights_size()));

  testing::TempDir dir;
  auto missing = SamplerOptionsForStage(*plan, core, dir.path(), 7);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("tokenizer.model"));

  testing::WriteText(dir / "tokenizer.model", "stand-in bytes: only the hash is read here");
  plan->mutable_data()->clear_tokenizer();
  auto options = SamplerOptionsForStage(*plan, core, dir.path(), 7);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->expected_tokenizer_hash, *Sha256File(dir / "tokenizer.model"));
  EXPECT_EQ(options->max_vocab_size, plan->model().vocab_size());
  EXPECT_EQ(options->seed, 7u);
  ASSERT_FALSE(options->sources.empty());
  EXPECT_EQ(options->sources[0].shard_dirs[0], dir / (options->sources[0].name + "/train"));
}

}  // namespace
}  // namespace loom::data
