// Math accuracy by greedy generation and the verifier (worker/engine/math_eval.h): a model that
// has memorised a few solved problems answers them, through the same chat rendering, stop token
// and verifier an `eval` stage uses; an untrained model answers none.
#include "worker/engine/math_eval.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "data/math_gen.h"
#include "engine_test_util.h"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/trainer.h"

namespace loom::engine {
namespace {

using loom::testing::TinyPlan;

constexpr int kProblems = 6;
constexpr int kSeqLen = 192;
constexpr int kRows = 4;

std::vector<data::Conversation> Problems() {
  data::SplitMix64 rng(11);
  std::vector<data::Conversation> out;
  for (int i = 0; i < kProblems; ++i) {
    const data::MathProblem p = data::GenerateMathProblem(rng);
    out.push_back({{"user", p.question}, {"assistant", p.solution}});
  }
  return out;
}

// Every step is the same packed batch: the problems, rendered with ChatML, loss on the answers.
class MemoriseSource : public BatchSource {
 public:
  explicit MemoriseSource(data::TokenBatch batch) : batch_(std::move(batch)) {}
  absl::Status Next(int seq_len, int global_sequences, int, int, data::TokenBatch* out) override {
    if (seq_len != batch_.seq_len || global_sequences != batch_.batch_size) {
      return absl::InternalError("the test's stage and batch disagree");
    }
    *out = batch_;
    return absl::OkStatus();
  }
  std::string SaveState() const override { return ""; }
  absl::Status RestoreState(std::string_view) override { return absl::OkStatus(); }

 private:
  data::TokenBatch batch_;
};

TEST(MathEval, AMemorisedModelAnswersAndAnUntrainedOneDoesNot) {
  auto tokenizer = data::Tokenizer::Load(data::testing::TinyTokenizerModel(320));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<data::Conversation> problems = Problems();
  std::vector<data::TokenizedExample> examples;
  for (const auto& c : problems) {
    auto e = data::TokenizeConversation(c, data::ChatTemplate::kChatML, **tokenizer);
    ASSERT_TRUE(e.ok()) << e.status();
    examples.push_back(*e);
  }
  data::TokenBatch batch = data::PackExamples(examples, kSeqLen, 0);
  ASSERT_LE(batch.batch_size, kRows) << "the problems do not fit the test's batch";
  // Pad to kRows rows of nothing trained.
  for (; batch.batch_size < kRows; ++batch.batch_size) {
    batch.inputs.insert(batch.inputs.end(), kSeqLen, 0);
    batch.targets.insert(batch.targets.end(), kSeqLen, data::kIgnoreIndex);
    batch.segment_ids.insert(batch.segment_ids.end(), kSeqLen, 0);
    batch.positions.insert(batch.positions.end(), kSeqLen, 0);
  }
  const auto plan = TinyPlan(absl::StrCat(R"(    tokens: 10M
    optimizer: {lr: 3e-3, weight_decay: 0}
    lr_schedule: {type: constant}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: )",
                                          kSeqLen * kRows, R"(}]
    seq_len_schedule: [{at_tokens: 0, seq_len: )",
                                          kSeqLen, R"(}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)"));
  TrainerOptions o;
  o.model = plan.model();
  o.model.set_vocab_size((*tokenizer)->vocab_size());
  o.stage = ResolveStage(plan, 0);
  o.max_steps = 150;
  MemoriseSource source(batch);
  auto trainer = Trainer::Create(o, &source);
  ASSERT_TRUE(trainer.ok()) << trainer.status();

  MathEvalOptions options;
  options.max_new_tokens = 48;
  auto before = EvaluateMathAccuracy((*trainer)->model(), **tokenizer, problems, options);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->problems, kProblems);
  EXPECT_EQ(before->correct, 0);

  double loss = 0;
  while (!(*trainer)->Done()) {
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    loss = r->loss;
  }
  auto after = EvaluateMathAccuracy((*trainer)->model(), **tokenizer, problems, options);
  ASSERT_TRUE(after.ok()) << after.status();
  std::string answers;
  for (const auto& s : after->samples) answers += s.answer + " [" + s.verdict + "]\n";
  EXPECT_GE(after->correct, kProblems - 1) << "final training loss " << loss << "\n" << answers;
  ASSERT_FALSE(after->samples.empty());
  EXPECT_EQ(after->samples[0].reference, problems[0][1].content);

  // Greedy: a second evaluation agrees exactly.
  auto again = EvaluateMathAccuracy((*trainer)->model(), **tokenizer, problems, options);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->correct, after->correct);
  EXPECT_EQ(again->samples[0].answer, after->samples[0].answer);
}

TEST(MathEval, AReferenceWithoutANumberIsRefused) {
  auto tokenizer = data::Tokenizer::Load(data::testing::TinyTokenizerModel(320));
  ASSERT_TRUE(tokenizer.ok());
  loom::v1::ModelConfig m;
  m.set_layers(1);
  m.set_d_model(32);
  m.set_heads(2);
  m.set_kv_heads(1);
  m.set_ffn_size(64);
  m.set_vocab_size((*tokenizer)->vocab_size());
  Transformer model(*TransformerConfig::FromProto(m));
  model.InitWeights(1);
  auto r = EvaluateMathAccuracy(model, **tokenizer, {{{"user", "Say hello."}, {"assistant", "Hello!"}}}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("holds no number"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace loom::engine
