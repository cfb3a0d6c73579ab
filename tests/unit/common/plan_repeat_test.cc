// `repeat` blocks (common/plan_repeat.h): Llama 3.1's rounds written once expand into plain stages
// with the references of each round rewired, read through the same parser every client uses.
#include "common/plan_repeat.h"

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/plan_io.h"
#include "common/plan_validation.h"

namespace loom {
namespace {

constexpr char kRounds[] = R"(name: rounds
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
defaults:
  parallel: {micro_batch_size: 2}  # even: the reward_model and dpo stages' pairs share micro-batches
  optimizer: {lr: 1e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
stages:
  - name: core
    kind: pretrain
    tokens: 64Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
  - name: sft0
    kind: sft
    from: core
    dataset: {source: sft_math}
  - name: rounds
    repeat:
      times: 3
      initial: {dpo: sft0}
      stages:
        - name: rm
          kind: reward_model
          from: core
          dataset: {source: prefs_math}
        - name: samples
          kind: rejection_sampling
          from: dpo
          dataset: {source: sft_math}
          rejection_sampling: {scorer: {reward_model: rm}}
        - name: sft
          kind: sft
          from: core
          dataset: {from_stage: samples}
        - name: dpo
          kind: dpo
          from: sft
          dataset: {source: prefs_math}
  - name: final
    kind: average
    average: {checkpoints: [dpo.r3, dpo.r2@10]}
)";

TEST(PlanRepeat, LlamaRoundsExpandWithEachRoundWiredToTheLast) {
  ParsedPlan parsed = ParsePlanText(kRounds, PlanFormat::kYaml);
  ASSERT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  const auto& stages = parsed.plan.stages();
  ASSERT_EQ(stages.size(), 2 + 4 * 3 + 1);
  EXPECT_EQ(stages[2].name(), "rm.r1");
  EXPECT_EQ(stages[5].name(), "dpo.r1");
  EXPECT_EQ(stages[13].name(), "dpo.r3");
  EXPECT_EQ(stages[14].name(), "final");
  for (int r = 0; r < 3; ++r) {
    for (int k = 0; k < 4; ++k) EXPECT_EQ(stages[2 + 4 * r + k].round(), r + 1);
  }
  EXPECT_EQ(stages[0].round(), 0);
  // Round 1's policy is the stand-in; later rounds sample from the previous round's DPO model.
  EXPECT_EQ(stages[3].from(), "sft0");
  EXPECT_EQ(stages[7].from(), "dpo.r1");
  EXPECT_EQ(stages[11].from(), "dpo.r2");
  // Within a round: this round's reward model, samples and SFT model.
  EXPECT_EQ(stages[7].rejection_sampling().scorer().reward_model(), "rm.r2");
  EXPECT_EQ(stages[8].dataset().from_stage(), "samples.r2");
  EXPECT_EQ(stages[9].from(), "sft.r2");
  // Names outside the block are left alone; blocks a stage did not have stay absent.
  EXPECT_EQ(stages[2].from(), "core");
  EXPECT_FALSE(stages[2].has_dpo());
  EXPECT_FALSE(stages[9].has_rejection_sampling());
  EXPECT_EQ(stages[14].average().checkpoints(1), "dpo.r2@10");
  const auto errors = ValidatePlan(parsed.plan);
  EXPECT_TRUE(errors.empty()) << FormatPlanErrors(errors);
}

TEST(PlanRepeat, ARoundOneReferenceToThePreviousRoundNeedsAStandIn) {
  std::string text = kRounds;
  text.replace(text.find("      initial: {dpo: sft0}\n"), std::string("      initial: {dpo: sft0}\n").size(), "");
  ParsedPlan parsed = ParsePlanText(text, PlanFormat::kYaml);
  ASSERT_EQ(parsed.errors.size(), 1u) << FormatPlanErrors(parsed.errors);
  EXPECT_EQ(parsed.errors[0].path, "stages[2].repeat.stages[1]");
  EXPECT_NE(parsed.errors[0].message.find("'samples' uses 'dpo' of the previous round"), std::string::npos)
      << parsed.errors[0].message;
  EXPECT_NE(parsed.errors[0].hint.find("repeat.initial"), std::string::npos);
}

TEST(PlanRepeat, BadBlocksAreRefusedWithTheirFieldPaths) {
  auto errors_of = [](const std::string& from, const std::string& to) {
    std::string text = kRounds;
    text.replace(text.find(from), from.size(), to);
    return ParsePlanText(text, PlanFormat::kYaml).errors;
  };
  auto e = errors_of("times: 3", "times: 0");
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e[0].path, "stages[2].repeat.times");
  e = errors_of("        - name: sft\n", "        - name: rm\n");
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e[0].path, "stages[2].repeat.stages[2].name");
  EXPECT_NE(e[0].message.find("appears twice"), std::string::npos);
  e = errors_of("initial: {dpo: sft0}", "initial: {dpo: sft0, ppo: sft0}");
  ASSERT_FALSE(e.empty());
  EXPECT_EQ(e[0].path, "stages[2].repeat.initial[ppo]");
}

// The issue's case: a ~380 KB plan whose block has 8,000 stages and 100 rounds (800,000 stages)
// is refused from a count, before anything is expanded, with the block's field path.
TEST(PlanRepeat, AnExpansionPastTheLimitIsRefusedBeforeExpanding) {
  std::string text = "name: huge\nmodel: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, "
                     "vocab_size: 512}\nstages:\n  - name: block\n    repeat:\n      times: 100\n"
                     "      stages:\n";
  for (int k = 0; k < 8000; ++k) {
    absl::StrAppend(&text, "        - {name: s", k, ", kind: sft, from: s", k == 0 ? 7999 : k - 1, "}\n");
  }
  ASSERT_GT(text.size(), 300u * 1024);
  const auto start = std::chrono::steady_clock::now();
  const auto errors = ParsePlanText(text, PlanFormat::kYaml).errors;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(errors.empty());
  EXPECT_EQ(errors[0].path, "stages[0].repeat");
  EXPECT_NE(errors[0].message.find("more than 10000 stages"), std::string::npos) << errors[0].message;
  EXPECT_LT(seconds, 5.0) << "most of this is reading 380 KB of YAML; the refusal itself is below";

  // The refusal alone, on the parsed form: a count, no expansion (this took minutes before).
  loom::v1::TrainingPlan huge;
  loom::v1::Stage* block = huge.add_stages();
  block->set_name("block");
  block->mutable_repeat()->set_times(100);
  for (int k = 0; k < 8000; ++k) block->mutable_repeat()->add_stages()->set_name(absl::StrCat("s", k));
  const auto refuse_start = std::chrono::steady_clock::now();
  const auto refused = ExpandRepeats(&huge);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - refuse_start).count(), 0.5);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].path, "stages[0].repeat");
  EXPECT_EQ(huge.stages_size(), 1) << "the plan is left as it was";

  // Under the limit, a block still expands (2 rounds x 4,000 stages), also quickly.
  loom::v1::TrainingPlan plan;
  loom::v1::Stage* entry = plan.add_stages();
  entry->set_name("block");
  entry->mutable_repeat()->set_times(2);
  for (int k = 0; k < 4000; ++k) {
    loom::v1::Stage* s = entry->mutable_repeat()->add_stages();
    s->set_name(absl::StrCat("s", k));
    s->set_from(absl::StrCat("s", k == 0 ? 3999 : k - 1));
  }
  entry->mutable_repeat()->mutable_initial()->insert({"s3999", "/ckpt"});
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(ExpandRepeats(&plan).empty());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_EQ(plan.stages_size(), 8000);
  EXPECT_EQ(plan.stages(4000).from(), "s3999.r1");
}

TEST(PlanRepeat, APlanWithoutBlocksIsUnchanged) {
  loom::v1::TrainingPlan plan;
  plan.add_stages()->set_name("a");
  const std::string before = plan.SerializeAsString();
  EXPECT_TRUE(ExpandRepeats(&plan).empty());
  EXPECT_EQ(plan.SerializeAsString(), before);
}

}  // namespace
}  // namespace loom
