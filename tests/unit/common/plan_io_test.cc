// Reading plans: the example plans, the three input formats, and the errors a person sees.
#include "common/plan_io.h"

#include <filesystem>
#include <fstream>

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include "common/plan_summary.h"
#include "common/plan_validation.h"
#include "plan_test_util.h"

namespace loom {
namespace {

using loom::testing::ExampleDir;
using loom::testing::FindError;
using loom::v1::TrainingPlan;

std::vector<std::string> ExamplePlans() {
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(ExampleDir())) {
    if (entry.path().extension() == ".yaml") paths.push_back(entry.path().string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

TEST(ExamplePlans, TheFourRecipesArePresent) {
  for (const char* name : {"llama3_tiny", "qwen2_tiny", "afm_tiny", "gemma2_tiny"}) {
    EXPECT_TRUE(std::filesystem::exists(ExampleDir() + "/" + name + ".yaml")) << name;
  }
}

TEST(ExamplePlans, EveryPlanValidatesAndRoundTripsThroughTextprotoAndJson) {
  const auto paths = ExamplePlans();
  ASSERT_GE(paths.size(), 4u);
  for (const std::string& path : paths) {
    SCOPED_TRACE(path);
    absl::StatusOr<TrainingPlan> plan = LoadPlan(path);
    ASSERT_TRUE(plan.ok()) << plan.status().message();
    EXPECT_FALSE(SummarizePlan(*plan).empty());

    std::string text;
    ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(*plan, &text));
    ParsedPlan from_text = ParsePlanText(text, PlanFormat::kTextproto);
    ASSERT_TRUE(from_text.errors.empty()) << FormatPlanErrors(from_text.errors);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*plan, from_text.plan));

    // Canonical proto JSON uses camelCase names (dModel): the reader accepts them too.
    std::string json;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*plan, &json).ok());
    ParsedPlan from_json = ParsePlanText(json, PlanFormat::kJson);
    ASSERT_TRUE(from_json.errors.empty()) << FormatPlanErrors(from_json.errors);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*plan, from_json.plan))
        << from_json.plan.DebugString();
  }
}

TEST(ExamplePlans, LlamaRampsAreReadWithUnits) {
  absl::StatusOr<TrainingPlan> plan = LoadPlan(ExampleDir() + "/llama3_tiny.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  const auto& core = plan->stages(0);
  ASSERT_EQ(core.batch_ramp_size(), 3);
  EXPECT_EQ(core.batch_ramp(1).at_tokens(), 32 * 1024);  // "32Ki"
  EXPECT_EQ(core.batch_ramp(1).global_batch_tokens(), 16 * 1024);
  EXPECT_EQ(core.tokens(), 192 * 1024);
  EXPECT_DOUBLE_EQ(core.data_mix(1).weights().at("code"), 0.3);
  EXPECT_EQ(plan->stages(1).seq_len_schedule_size(), 6);  // six context-lengthening steps
}

struct BadText {
  const char* name;
  const char* yaml;
  const char* path;
  const char* message;
  int line;
};

const BadText kBadTexts[] = {
    {"unknown field", "name: x\nmodel:\n  layers: 2\n  dmodel: 64\n", "model.dmodel",
     "unknown field 'dmodel'", 4},
    {"text where a number goes", "name: x\nmodel: {layers: many}\n", "model.layers", "'many' is not a count",
     2},
    {"bad unit", "stages:\n  - name: a\n    tokens: 2X\n", "stages[0].tokens", "'2X' is not a count", 3},
    {"number too large for int32", "model: {layers: 3B}\n", "model.layers",
     "out of range for a 32-bit number", 1},
    {"unknown enum", "stages:\n  - {name: a, kind: pretraining}\n", "stages[0].kind",
     "'pretraining' is not a known value", 2},
    {"list expected", "stages: {name: a}\n", "stages", "expected a list", 1},
    {"mapping expected", "model: [1, 2]\n", "model", "expected a mapping", 1},
    {"duplicate key", "name: a\nname: b\n", "name", "is given twice", 2},
    {"duplicate map key", "stages:\n  - data_mix: [{weights: {english: 1, english: 2}}]\n",
     "stages[0].data_mix[0].weights.english", "is given twice", 2},
    {"bool expected", "defaults: {parallel: {elastic: maybe}}\n", "defaults.parallel.elastic",
     "'maybe' is not true or false", 1},
    {"negative seed", "seed: -1\n", "seed", "is negative", 1},
    {"not finite", "defaults: {optimizer: {lr: .nan}}\n", "defaults.optimizer.lr", "is not a", 1},
};

TEST(PlanText, ParseErrorsNameThePathAndLine) {
  for (const BadText& c : kBadTexts) {
    SCOPED_TRACE(c.name);
    ParsedPlan parsed = ParsePlanText(c.yaml, PlanFormat::kYaml);
    const PlanError* e = FindError(parsed.errors, c.path);
    ASSERT_NE(e, nullptr) << "no error at " << c.path << "; got:\n" << FormatPlanErrors(parsed.errors);
    EXPECT_NE(e->message.find(c.message), std::string::npos) << e->message;
    EXPECT_EQ(e->line, c.line);
  }
}

TEST(PlanText, UnknownFieldSuggestsTheClosestName) {
  ParsedPlan parsed = ParsePlanText("model: {layers: 2, kv_head: 1}\n", PlanFormat::kYaml);
  const PlanError* e = FindError(parsed.errors, "model.kv_head");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->hint, "did you mean 'kv_heads'?");
  EXPECT_EQ(FormatPlanError(*e, "p.yaml"),
            "p.yaml:1:20: model.kv_head: unknown field 'kv_head' (hint: did you mean 'kv_heads'?)");
}

TEST(PlanText, EnumsAcceptDisplayAndFullNames) {
  ParsedPlan parsed = ParsePlanText(
      "stages:\n  - {kind: continued_pretrain}\n  - {kind: STAGE_KIND_ANNEAL}\n  - {kind: "
      "Context-Extension}\n",
      PlanFormat::kYaml);
  ASSERT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  EXPECT_EQ(parsed.plan.stages(0).kind(), loom::v1::STAGE_KIND_CONTINUED_PRETRAIN);
  EXPECT_EQ(parsed.plan.stages(1).kind(), loom::v1::STAGE_KIND_ANNEAL);
  EXPECT_EQ(parsed.plan.stages(2).kind(), loom::v1::STAGE_KIND_CONTEXT_EXTENSION);
}

TEST(PlanText, YamlSyntaxErrorHasALine) {
  ParsedPlan parsed = ParsePlanText("name: x\nmodel: {layers: 2\nstages: []\n", PlanFormat::kYaml);
  ASSERT_EQ(parsed.errors.size(), 1u);
  EXPECT_NE(parsed.errors[0].message.find("not valid YAML"), std::string::npos);
  EXPECT_GT(parsed.errors[0].line, 0);
}

TEST(PlanText, EmptyAndOversizedPlansAreRefused) {
  EXPECT_EQ(ParsePlanText("", PlanFormat::kYaml).errors.at(0).message, "the plan is empty");
  const std::string huge(kMaxPlanBytes + 1, '#');
  EXPECT_NE(ParsePlanText(huge, PlanFormat::kYaml).errors.at(0).message.find("the limit is 1048576"),
            std::string::npos);
}

TEST(PlanText, TextprotoErrorsHaveLines) {
  ParsedPlan parsed = ParsePlanText("name: \"x\"\nmodel { layers: 2 dmodel: 3 }\n", PlanFormat::kTextproto);
  ASSERT_FALSE(parsed.errors.empty());
  EXPECT_EQ(parsed.errors[0].line, 2);
  EXPECT_NE(parsed.errors[0].message.find("dmodel"), std::string::npos);
}

TEST(PlanFile, FormatFollowsTheExtension) {
  EXPECT_EQ(PlanFormatFromPath("a/plan.yaml"), PlanFormat::kYaml);
  EXPECT_EQ(PlanFormatFromPath("plan.YML"), PlanFormat::kYaml);
  EXPECT_EQ(PlanFormatFromPath("plan.json"), PlanFormat::kJson);
  EXPECT_EQ(PlanFormatFromPath("plan.textproto"), PlanFormat::kTextproto);
  EXPECT_EQ(PlanFormatFromPath("plan.pbtxt"), PlanFormat::kTextproto);
}

TEST(PlanFile, ValidationErrorsPointAtTheLineTheValueCameFrom) {
  const std::string path = ::testing::TempDir() + "/inherited.yaml";
  {
    std::ofstream out(path);
    out << R"(name: inherited
model: {layers: 2, d_model: 64, heads: 4, ffn_size: 128, vocab_size: 256}
defaults:
  optimizer:
    lr: 7
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 4Ki}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  data_mix: [{at_tokens: 0, weights: {english: 1}}]
stages:
  - name: core
    kind: pretrain
    tokens: 1M
    parallel: {pp: 3}
)";
  }
  absl::StatusOr<TrainingPlan> plan = LoadPlan(path);
  ASSERT_FALSE(plan.ok());
  const std::string message(plan.status().message());
  EXPECT_NE(message.find("2 errors in " + path), std::string::npos) << message;
  // The lr came from defaults (line 5); pp is on the stage (line 13).
  EXPECT_NE(message.find(path + ":5:9: stages[0].optimizer.lr: 7 is not in (0, 1]"), std::string::npos)
      << message;
  EXPECT_NE(message.find(path + ":13:20: stages[0].parallel.pp: 3 is more than the model's layers (2)"),
            std::string::npos)
      << message;
}

TEST(PlanFile, MissingFileIsNotFound) {
  absl::StatusOr<ParsedPlan> parsed = ReadPlanFile("/nonexistent/plan.yaml");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(parsed.status().message().find("/nonexistent/plan.yaml"), std::string::npos);
}

}  // namespace
}  // namespace loom
