// What a stage reads from other stages (common/stage_inputs.h): every reference with its field
// path and the StageInputs field it resolves to, and the check the rank makes before it reads.
#include "common/stage_inputs.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/plan_resolve.h"
#include "plan_test_util.h"

namespace loom {
namespace {

using loom::testing::BasePlan;
using loom::v1::Stage;
using loom::v1::StageInputs;

// The base plan with one more stage, written in YAML, resolved.
Stage Resolved(const char* yaml_stage) {
  ParsedPlan parsed =
      ParsePlanText(absl::StrCat(loom::testing::kBasePlanYaml, "  - ", yaml_stage, "\n"), PlanFormat::kYaml);
  EXPECT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  return ResolveStage(parsed.plan, parsed.plan.stages_size() - 1);
}

std::string Describe(const std::vector<StageInputRef>& refs) {
  std::string out;
  for (const StageInputRef& r : refs) {
    absl::StrAppend(&out, r.field, "=", r.text, "@", static_cast<int>(r.slot), ":", r.index, " ");
  }
  return out;
}

TEST(FindStage, ReturnsTheIndexOfTheNamedStageOrMinusOne) {
  const loom::v1::TrainingPlan plan = BasePlan();
  EXPECT_EQ(FindStage(plan, "core"), 0);
  EXPECT_EQ(FindStage(plan, "avg"), 3);
  EXPECT_EQ(FindStage(plan, "cor"), -1);
  EXPECT_EQ(FindStage(plan, ""), -1);
}

TEST(FindStage, ADuplicateNameFindsTheFirstStage) {
  loom::v1::TrainingPlan plan = BasePlan();
  plan.mutable_stages(2)->set_name("sft");
  EXPECT_EQ(FindStage(plan, "sft"), 1);
}

TEST(StageInputRefs, ADpoStageReadsFromAndTheReferenceThatDefaultsToIt) {
  const std::vector<StageInputRef> refs = StageInputRefs(ResolveStage(BasePlan(), 2));
  ASSERT_EQ(refs.size(), 2u) << Describe(refs);
  EXPECT_EQ(refs[0].field, "from");
  EXPECT_EQ(refs[0].text, "sft");
  EXPECT_EQ(refs[0].slot, InputSlot::kFrom);
  EXPECT_EQ(refs[1].field, "dpo.reference");
  EXPECT_EQ(refs[1].text, "sft");
  EXPECT_EQ(refs[1].slot, InputSlot::kReference);
}

TEST(StageInputRefs, AnOfflineDpoStageDoesNotReadItsScorer) {
  Stage s = Resolved("{name: d2, kind: dpo, from: sft, dataset: {source: prefs_math}}");
  s.mutable_dpo()->mutable_scorer()->set_reward_model("rm");
  EXPECT_EQ(StageInputRefs(s).size(), 2u) << Describe(StageInputRefs(s));
  s.mutable_dpo()->set_online(true);
  const std::vector<StageInputRef> refs = StageInputRefs(s);
  ASSERT_EQ(refs.size(), 3u) << Describe(refs);
  EXPECT_EQ(refs[2].field, "dpo.scorer.reward_model");
  EXPECT_EQ(refs[2].slot, InputSlot::kRewardModel);
}

TEST(StageInputRefs, AverageCheckpointsAreListedWithTheirPositions) {
  const std::vector<StageInputRef> refs = StageInputRefs(ResolveStage(BasePlan(), 3));
  ASSERT_EQ(refs.size(), 2u) << Describe(refs);
  EXPECT_EQ(refs[0].field, "average.checkpoints[0]");
  EXPECT_EQ(refs[0].text, "sft");
  EXPECT_EQ(refs[1].field, "average.checkpoints[1]");
  EXPECT_EQ(refs[1].text, "dpo");
  EXPECT_EQ(refs[1].slot, InputSlot::kCheckpoints);
  EXPECT_EQ(refs[1].index, 1);
}

TEST(StageInputRefs, MergeInputsAndBaseButNotFrom) {
  Stage s =
      Resolved("{name: m, kind: merge, merge: {method: ties, inputs: [sft, dpo@10, ./ckpt/x], base: core}}");
  s.set_from("core");  // validation refuses it; a merge stage does not read it
  const std::vector<StageInputRef> refs = StageInputRefs(s);
  ASSERT_EQ(refs.size(), 4u) << Describe(refs);
  EXPECT_EQ(refs[1].field, "merge.inputs[1]");
  EXPECT_EQ(refs[1].text, "dpo@10");
  EXPECT_EQ(refs[2].text, "./ckpt/x");
  EXPECT_EQ(refs[2].slot, InputSlot::kMergeInputs);
  EXPECT_EQ(refs[2].index, 2);
  EXPECT_EQ(refs[3].field, "merge.base");
  EXPECT_EQ(refs[3].slot, InputSlot::kMergeBase);
}

TEST(StageInputRefs, TeacherScorersAndDatasetsHaveTheirFieldPaths) {
  std::vector<StageInputRef> refs =
      StageInputRefs(Resolved("{name: kd, kind: distill, tokens: 1M, distill: {teacher: core@100}}"));
  ASSERT_EQ(refs.size(), 1u) << Describe(refs);
  EXPECT_EQ(refs[0].field, "distill.teacher");
  EXPECT_EQ(refs[0].text, "core@100");
  EXPECT_EQ(refs[0].slot, InputSlot::kTeacher);

  refs = StageInputRefs(Resolved(
      "{name: rl, kind: rl, from: sft, dataset: {source: sft_math}, rl: {scorer: {reward_model: rm}}}"));
  ASSERT_EQ(refs.size(), 3u) << Describe(refs);
  EXPECT_EQ(refs[1].field, "rl.reference");
  EXPECT_EQ(refs[1].text, "sft");  // defaults to from
  EXPECT_EQ(refs[2].field, "rl.scorer.reward_model");

  refs =
      StageInputRefs(Resolved("{name: rs, kind: rejection_sampling, from: sft, dataset: {source: sft_math}, "
                              "rejection_sampling: {scorer: {reward_model: rm}}}"));
  ASSERT_EQ(refs.size(), 2u) << Describe(refs);
  EXPECT_EQ(refs[1].field, "rejection_sampling.scorer.reward_model");

  refs = StageInputRefs(Resolved("{name: sft2, kind: sft, from: core, dataset: {from_stage: rs}}"));
  ASSERT_EQ(refs.size(), 2u) << Describe(refs);
  EXPECT_EQ(refs[1].field, "dataset.from_stage");
  EXPECT_EQ(refs[1].text, "rs");
  EXPECT_EQ(refs[1].slot, InputSlot::kDataset);
}

TEST(StageInputRefs, APretrainStageFromNothingReadsNothing) {
  EXPECT_TRUE(StageInputRefs(ResolveStage(BasePlan(), 0)).empty());
}

TEST(SetInput, WritesEachReferenceToItsFieldAndGetInputReadsItBack) {
  const Stage s =
      Resolved("{name: m, kind: merge, merge: {method: ties, inputs: [sft, dpo, core], base: core}}");
  StageInputs inputs;
  const std::vector<StageInputRef> refs = StageInputRefs(s);
  // Out of order: the list grows to the position written.
  SetInput(refs[2], "/c/core", &inputs);
  SetInput(refs[0], "/c/sft", &inputs);
  SetInput(refs[1], "/c/dpo", &inputs);
  SetInput(refs[3], "/c/base", &inputs);
  ASSERT_EQ(inputs.merge_inputs_size(), 3);
  EXPECT_EQ(inputs.merge_inputs(0), "/c/sft");
  EXPECT_EQ(inputs.merge_inputs(1), "/c/dpo");
  EXPECT_EQ(inputs.merge_inputs(2), "/c/core");
  EXPECT_EQ(inputs.merge_base(), "/c/base");
  EXPECT_TRUE(inputs.from().empty());
  for (const StageInputRef& r : refs) EXPECT_FALSE(GetInput(r, inputs).empty()) << r.field;
  EXPECT_TRUE(CheckInputsResolved(s, inputs).ok()) << CheckInputsResolved(s, inputs);
}

TEST(CheckInputsResolved, NamesTheStageAndTheFieldOfAMissingInput) {
  const Stage dpo = ResolveStage(BasePlan(), 2);
  StageInputs inputs;
  inputs.set_from("/c/sft");
  const absl::Status s = CheckInputsResolved(dpo, inputs);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "stage 'dpo': input dpo.reference ('sft') was not resolved to a checkpoint");
  inputs.set_reference("/c/sft");
  EXPECT_TRUE(CheckInputsResolved(dpo, inputs).ok());
}

TEST(CheckInputsResolved, ADatasetFromAnEarlierStageMustBeResolved) {
  const Stage sft = Resolved("{name: sft2, kind: sft, from: core, dataset: {from_stage: rs}}");
  StageInputs inputs;
  inputs.set_from("/c/core");
  const absl::Status s = CheckInputsResolved(sft, inputs);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "stage 'sft2': input dataset.from_stage ('rs') was not resolved to a dataset");
}

TEST(CheckInputsResolved, AverageLastKNeedsExactlyLastKCheckpoints) {
  const Stage avg = Resolved("{name: avg2, kind: average, from: core, average: {last_k: 3}}");
  StageInputs inputs;
  inputs.set_from("/c/core/step-30");
  inputs.add_checkpoints("/c/core/step-10");
  inputs.add_checkpoints("/c/core/step-20");
  absl::Status s = CheckInputsResolved(avg, inputs);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "stage 'avg2': average.last_k needs 3 checkpoints; 2 were resolved");
  inputs.add_checkpoints("");
  s = CheckInputsResolved(avg, inputs);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("checkpoint 2 of average.last_k was not resolved"), absl::string_view::npos)
      << s;
  inputs.set_checkpoints(2, "/c/core/step-30");
  EXPECT_TRUE(CheckInputsResolved(avg, inputs).ok());
  inputs.add_checkpoints("/c/core/step-40");
  EXPECT_FALSE(CheckInputsResolved(avg, inputs).ok());  // one more than it averages
}

TEST(CheckInputsResolved, AListedAverageNeedsEachOfItsCheckpoints) {
  const Stage avg = ResolveStage(BasePlan(), 3);
  StageInputs inputs;
  inputs.add_checkpoints("/c/sft");
  absl::Status s = CheckInputsResolved(avg, inputs);
  EXPECT_EQ(s.message(),
            "stage 'avg': input average.checkpoints[1] ('dpo') was not resolved to a checkpoint");
  inputs.add_checkpoints("/c/dpo");
  EXPECT_TRUE(CheckInputsResolved(avg, inputs).ok());
}

}  // namespace
}  // namespace loom
