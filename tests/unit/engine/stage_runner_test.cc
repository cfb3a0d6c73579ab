// The stage runners driven without a rank process: a test reporter stands where loom-rank maps
// the reports to the wire, and asserts what a runner reports (steps, measures, checkpoints), that a
// runner trains exactly as the trainer does, and that a later stage's runner reads an earlier
// stage's result through the typed inputs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "data/math_gen.h"
#include "engine_test_util.h"
#include "tests/unit/data/bpe_fixture.h"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/stages/rejection_sampling.h"
#include "worker/engine/stages/stage_runner.h"
#include "worker/engine/training/trainer.h"

namespace loom::engine {
namespace {

namespace fs = std::filesystem;

// Collects what a runner reports.
class Recorder : public StageReporter {
 public:
  absl::Status Progress(const ProgressReport& report) override {
    progress.push_back(report);
    return absl::OkStatus();
  }
  absl::Status Checkpoint(const CheckpointWritten& checkpoint) override {
    checkpoints.push_back(checkpoint);
    return absl::OkStatus();
  }
  void Log(const std::string& line) override { log.push_back(line); }

  std::vector<double> StepLosses() const {
    std::vector<double> out;
    for (const ProgressReport& p : progress) {
      if (p.step_done) out.push_back(p.loss);
    }
    return out;
  }
  // The measures of every report, later ones overwriting earlier ones.
  std::map<std::string, double> EvalMetrics() const {
    std::map<std::string, double> out;
    for (const ProgressReport& p : progress) {
      for (const auto& [k, v] : p.eval_metrics) out[k] = v;
    }
    return out;
  }

  std::vector<ProgressReport> progress;
  std::vector<CheckpointWritten> checkpoints;
  std::vector<std::string> log;
};

// Every kind has a runner; a stage of no kind has none.
TEST(StageRunners, EveryStageKindHasARunner) {
  const google::protobuf::EnumDescriptor* kinds = loom::v1::StageKind_descriptor();
  for (int i = 0; i < kinds->value_count(); ++i) {
    const auto kind = static_cast<loom::v1::StageKind>(kinds->value(i)->number());
    if (kind == loom::v1::STAGE_KIND_UNSPECIFIED) {
      EXPECT_EQ(RunnerFor(kind), nullptr);
    } else {
      EXPECT_NE(RunnerFor(kind), nullptr) << kinds->value(i)->name();
    }
  }
}

// The pre-training runner on a token stream trains exactly as the trainer does: the same losses,
// bit for bit, a progress report per step and one final checkpoint report.
TEST(StageRunners, PretrainRunnerReportsTheTrainersStepsAndItsFinalCheckpoint) {
  data::testing::TempDir dir;
  const loom::v1::TrainingPlan plan = loom::testing::TinyPlan(R"(    tokens: 16Ki
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    optimizer: {lr: 1e-3}
    checkpoint: {every_steps: 5}
)");
  const std::string text = loom::testing::RepetitiveText();
  std::vector<int32_t> bytes(text.begin(), text.end());

  TokenStreamSource runner_data(bytes);
  StageRun run;
  run.plan_id = "tiny-1";
  run.stage = ResolveStage(plan, 0);
  run.model = ResolveModel(plan, "");
  run.max_steps = 12;
  run.checkpoint_dir = dir / "core";
  run.token_source = &runner_data;
  Recorder recorder;
  ASSERT_TRUE(RunStage(run, recorder).ok());

  TokenStreamSource direct_data(bytes);
  // The trainer alone, with the kernels' threads the runner set.
  TrainerOptions options;
  options.model = run.model;
  options.stage = run.stage;
  options.max_steps = 12;
  auto trainer = Trainer::Create(options, &direct_data);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  std::vector<double> direct;
  ASSERT_TRUE((*trainer)->Run([&](const StepReport& r) { direct.push_back(r.loss); }, nullptr).ok());

  EXPECT_EQ(recorder.StepLosses(), direct);
  ASSERT_EQ(recorder.checkpoints.size(), 3u);  // steps 5, 10 and the last
  const CheckpointWritten& last = recorder.checkpoints.back();
  EXPECT_TRUE(last.final);
  EXPECT_EQ(last.step, 12);
  EXPECT_EQ(last.path, dir / ("core/" + CheckpointDirName(12)));
  EXPECT_EQ(last.num_shards, 1);
  EXPECT_TRUE(ReadCheckpointManifest(last.path, /*verify=*/true).ok());
  EXPECT_FALSE(recorder.checkpoints[0].final);
}

// Prepared data for the chat runners: the tiny tokenizer and an sft_math source of math chats.
// With `hugging_face`, the tokenizer is a byte-level BPE tokenizer.json (as `loom data prepare
// --tokenizer X.json` leaves it) with the ChatML pieces among its added tokens.
class ChatData {
 public:
  explicit ChatData(bool hugging_face = false) {
    if (hugging_face) {
      data::testing::HandTokenizer bpe;
      bpe.llama3 = true;
      bpe.merges = {{" ", "t"}, {"h", "e"}, {" t", "he"}, {" ", "="}, {"1", "2"}, {"i", "s"}, {" ", "i"}};
      std::ofstream(dir_ / "tokenizer.json") << bpe.Build().dump();
    } else {
      fs::copy_file(data::testing::TinyTokenizerModel(320), dir_ / "tokenizer.model");
    }
    fs::create_directories(dir_ / "sft_math");
    data::SplitMix64 rng(11);
    std::vector<data::Conversation> chats;
    for (int i = 0; i < 24; ++i) {
      const data::MathProblem p = data::GenerateMathProblem(rng);
      chats.push_back({{"user", p.question}, {"assistant", p.solution}});
    }
    std::ofstream(dir_ / "sft_math/train.jsonl") << ConversationsToJsonl(chats);
    chats.resize(4);
    std::ofstream(dir_ / "sft_math/heldout.jsonl") << ConversationsToJsonl(chats);
  }
  std::string path() const { return dir_.path(); }

 private:
  data::testing::TempDir dir_;
};

loom::v1::TrainingPlan ChatPlan(const std::string& from) {
  const std::string text = R"(name: chat
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 320}
stages:
  - name: sft
    kind: sft
    from: )" + from + R"(
    tokens: 8Ki
    dataset: {source: sft_math, epochs: 50}
    optimizer: {lr: 1e-3}
    parallel: {micro_batch_size: 2}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
    checkpoint: {every_steps: 4}
    eval: {math_accuracy: true, math_problems: 4}
  - name: avg
    kind: average
    from: sft
    average: {last_k: 2}
  - name: measure
    kind: eval
    from: sft
    eval: {math_accuracy: true, math_problems: 4}
)";
  ParsedPlan parsed = ParsePlanText(text, PlanFormat::kYaml);
  EXPECT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  const auto errors = ValidatePlan(parsed.plan);
  EXPECT_TRUE(errors.empty()) << FormatPlanErrors(errors);
  return parsed.plan;
}

StageRun ChatRun(const loom::v1::TrainingPlan& plan, int index, const std::string& data_dir,
                 const std::string& checkpoints) {
  StageRun run;
  run.plan_id = "chat-1";
  run.stage = ResolveStage(plan, index);
  run.model = ResolveModel(plan, run.stage.model());
  run.data.set_dir(data_dir);
  run.checkpoint_dir = checkpoints + "/" + run.stage.name();
  return run;
}

// The model the sft stages start from, freshly initialised, saved as a checkpoint at `dir`.
absl::Status SaveFreshBase(const std::string& dir) {
  loom::v1::ModelConfig config;
  config.set_layers(2);
  config.set_d_model(64);
  config.set_heads(4);
  config.set_kv_heads(2);
  config.set_ffn_size(128);
  config.set_vocab_size(320);
  ApplyModelDefaults(&config);
  Transformer model(*TransformerConfig::FromProto(config));
  model.InitWeights(3);
  loom::v1::CheckpointManifest manifest;
  *manifest.mutable_model() = config;
  return SaveCheckpoint(dir, model, nullptr, manifest);
}

// sft, then an average of its last two checkpoints and an eval of its result, each stage by its
// runner and each reading the one before through StageInputs, as loom-rank runs them.
TEST(StageRunners, SftThenAverageAndEvalReadTheirInputs) {
  const ChatData data;
  data::testing::TempDir checkpoints;
  // The model the sft stage starts from: freshly initialised.
  const std::string base = checkpoints / "base";
  ASSERT_TRUE(SaveFreshBase(base).ok());
  const loom::v1::TrainingPlan plan = ChatPlan(base);

  Recorder sft;
  StageRun train = ChatRun(plan, 0, data.path(), checkpoints.path());
  train.inputs.set_from(base);
  ASSERT_TRUE(RunStage(train, sft).ok())
      << (sft.log.empty() ? "" : sft.log.back());
  EXPECT_EQ(sft.StepLosses().size(), 8u);  // 8Ki tokens in 1Ki batches
  const std::map<std::string, double> trained = sft.EvalMetrics();
  ASSERT_TRUE(trained.contains("sft_math/accuracy/before"));
  ASSERT_TRUE(trained.contains("sft_math/accuracy"));
  EXPECT_EQ(trained.at("sft_math/problems"), 4);
  ASSERT_EQ(sft.checkpoints.size(), 2u);
  ASSERT_TRUE(sft.checkpoints.back().final);
  // What an export ships with the weights: the tokenizer trained with and the chat template.
  const auto sft_manifest = ReadCheckpointManifest(sft.checkpoints.back().path, /*verify=*/false);
  ASSERT_TRUE(sft_manifest.ok()) << sft_manifest.status();
  EXPECT_EQ(sft_manifest->metadata().at("chat_template"), "chatml");
  EXPECT_EQ(sft_manifest->metadata().at("tokenizer"), fs::absolute(data.path() + "/tokenizer.model").string());
  EXPECT_EQ(sft_manifest->tokenizer_sha256().size(), 64u);

  StageRun average = ChatRun(plan, 1, data.path(), checkpoints.path());
  for (const CheckpointWritten& c : sft.checkpoints) average.inputs.add_checkpoints(c.path);
  Recorder averaged;
  ASSERT_TRUE(RunStage(average, averaged).ok());
  ASSERT_EQ(averaged.checkpoints.size(), 1u);
  EXPECT_TRUE(averaged.checkpoints[0].final);
  const auto averaged_manifest = ReadCheckpointManifest(averaged.checkpoints[0].path, /*verify=*/true);
  ASSERT_TRUE(averaged_manifest.ok()) << averaged_manifest.status();
  EXPECT_EQ(averaged_manifest->metadata().at("chat_template"), "chatml");
  EXPECT_EQ(averaged_manifest->tokenizer_sha256(), sft_manifest->tokenizer_sha256());

  // The eval stage measures the sft model as the sft stage's last evaluation did.
  StageRun measure = ChatRun(plan, 2, data.path(), checkpoints.path());
  measure.inputs.set_from(sft.checkpoints.back().path);
  Recorder measured;
  ASSERT_TRUE(RunStage(measure, measured).ok());
  EXPECT_TRUE(measured.checkpoints.empty());
  EXPECT_EQ(measured.EvalMetrics().at("sft_math/accuracy"), trained.at("sft_math/accuracy"));

  // An eval stage whose input was not resolved fails, naming the field.
  measure.inputs.clear_from();
  const absl::Status unresolved = RunStage(measure, measured);
  ASSERT_FALSE(unresolved.ok());
  EXPECT_NE(unresolved.message().find("from was not resolved"), std::string::npos) << unresolved;
}

// A data directory prepared with a Hugging Face tokenizer.json: the sft stage finds it in place
// of tokenizer.model (data::DefaultTokenizerPath) and renders ChatML with its added tokens.
TEST(StageRunners, SftTrainsOnDataPreparedWithATokenizerJson) {
  const ChatData data(/*hugging_face=*/true);
  ASSERT_FALSE(fs::exists(data.path() + "/tokenizer.model"));
  data::testing::TempDir checkpoints;
  const std::string base = checkpoints / "base";
  ASSERT_TRUE(SaveFreshBase(base).ok());
  const loom::v1::TrainingPlan plan = ChatPlan(base);
  Recorder sft;
  StageRun train = ChatRun(plan, 0, data.path(), checkpoints.path());
  train.inputs.set_from(base);
  ASSERT_TRUE(RunStage(train, sft).ok()) << (sft.log.empty() ? "" : sft.log.back());
  const std::vector<double> losses = sft.StepLosses();
  ASSERT_EQ(losses.size(), 8u);
  for (double loss : losses) EXPECT_TRUE(std::isfinite(loss));
  EXPECT_LT(losses.back(), losses.front());
  EXPECT_TRUE(sft.EvalMetrics().contains("sft_math/accuracy"));
}

}  // namespace
}  // namespace loom::engine
