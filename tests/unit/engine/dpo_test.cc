// A dpo stage through the trainer: preference pairs as (chosen, rejected) row pairs with the
// reference's log-probabilities (PreferenceBatchSource). At the first step the policy is the
// reference, so the loss is ln 2 and the implicit rewards are 0; training raises the policy's
// preference for the chosen answers; the reference's values are computed once and read back
// from the cache by a later attempt, and a resumed stage repeats the uninterrupted one exactly.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "data/math_gen.h"
#include "engine_test_util.h"
#include "nlohmann/json.hpp"
#include "tests/unit/data/data_test_util.h"
#include "tests/unit/engine/gloo_ranks.h"
#include "common/files.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/sources/preference_source.h"
#include "worker/engine/training/trainer.h"
#include "worker/engine/evaluation/preference_accuracy.h"
#include "worker/engine/training/preference_objective.h"
#include "worker/engine/training/reward_model_objective.h"

namespace loom::engine {
namespace {

using loom::testing::TinyPlan;

constexpr int kSeqLen = 192;
constexpr int kPairs = 16;

// Generated math preference pairs: the rejected solution has one step miscomputed.
std::string WritePairs(const std::string& path, int count, uint64_t seed) {
  data::SplitMix64 rng(seed);
  std::string text;
  for (int i = 0; i < count; ++i) {
    const data::MathProblem p = data::GenerateMathProblem(rng);
    text += nlohmann::json{{"prompt", p.question}, {"chosen", p.solution}, {"rejected", data::WrongSolution(p, rng)}}
                .dump() +
            "\n";
  }
  data::testing::WriteText(path, text);
  return path;
}

struct Fixture {
  data::testing::TempDir dir;
  std::unique_ptr<data::Tokenizer> tokenizer;
  loom::v1::TrainingPlan plan;
  std::string reference;  // a briefly trained model (the "SFT model")

  Fixture() {
    tokenizer = std::move(*data::Tokenizer::Load(data::testing::TinyTokenizerModel(320)));
    plan = TinyPlan(absl::StrCat(R"(    tokens: 10M
    optimizer: {lr: 1e-3, weight_decay: 0}
    lr_schedule: {type: constant}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: )",
                                 8 * kSeqLen, R"(}]
    seq_len_schedule: [{at_tokens: 0, seq_len: )",
                                 kSeqLen, R"(}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)"));
    // The reference: the tiny model after a few steps on the chosen answers' text.
    std::vector<int32_t> tokens;
    data::SplitMix64 rng(5);
    for (int i = 0; i < 200; ++i) {
      const data::MathProblem p = data::GenerateMathProblem(rng);
      for (int32_t t : tokenizer->Encode(p.question + "\n" + p.solution + "\n")) tokens.push_back(t);
    }
    TokenStreamSource text(tokens);
    TrainerOptions o = Options();
    o.checkpoint_dir = dir / "sft";
    o.max_steps = 30;
    auto trainer = Trainer::Create(o, &text);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    EXPECT_TRUE((*trainer)->Run(nullptr, nullptr).ok());
    reference = dir / "sft/step-000030";
  }

  TrainerOptions Options() const {
    TrainerOptions o;
    o.model = plan.model();
    o.model.set_vocab_size(tokenizer->vocab_size());
    o.stage = ResolveStage(plan, 0);
    return o;
  }

  std::unique_ptr<PreferenceBatchSource> Source(const std::string& cache) {
    PreferenceSourceOptions po;
    po.path = WritePairs(dir / "train.jsonl", kPairs, 1);
    po.seed = 9;
    po.epochs = 1000;
    auto source = PreferenceBatchSource::Open(po, *tokenizer);
    EXPECT_TRUE(source.ok()) << source.status();
    Transformer model(*TransformerConfig::FromProto(Options().model));
    EXPECT_TRUE(LoadWeights(reference, &model).ok());
    EXPECT_TRUE((*source)->ComputeReference(model, reference, kSeqLen, cache).ok());
    return std::move(*source);
  }

  std::unique_ptr<Trainer> DpoTrainer(BatchSource* source, const std::string& checkpoints = "",
                                      const std::string& resume = "") {
    TrainerOptions o = Options();
    o.init_from = reference;
    kernels::cpu::DpoOptions dpo;
    dpo.beta = 0.1;
    o.objective = std::make_shared<PreferenceObjective>(dpo);
    o.checkpoint_dir = checkpoints;
    o.resume_from = resume;
    auto trainer = Trainer::Create(o, source);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    return std::move(*trainer);
  }
};

Fixture& Shared() {
  static Fixture* f = new Fixture();
  return *f;
}

TEST(Dpo, FirstStepIsLn2WithZeroRewards) {
  Fixture& f = Shared();
  auto source = f.Source("");
  auto trainer = f.DpoTrainer(source.get());
  auto r = trainer->Step();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->loss, std::log(2.0), 1e-6);
  EXPECT_NEAR(r->metrics.at("dpo/chosen_reward"), 0.0, 1e-5);
  EXPECT_NEAR(r->metrics.at("dpo/rejected_reward"), 0.0, 1e-5);
  EXPECT_GT(r->grad_norm, 0.0) << "the DPO gradient at the reference is not zero in general";
}

TEST(Dpo, TrainingRaisesThePreferenceForChosenAnswers) {
  constexpr int kSteps = 40;
  Fixture& f = Shared();
  auto source = f.Source("");
  auto pairs = ReadPreferenceExamples(f.dir / "train.jsonl", data::ChatTemplate::kChatML, *f.tokenizer);
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  auto trainer = f.DpoTrainer(source.get());
  const int32_t pad = f.tokenizer->pad_id() >= 0 ? f.tokenizer->pad_id() : f.tokenizer->eos_id();
  const PreferenceAccuracy before = EvaluatePreferenceAccuracy(trainer->model(), *pairs, kSeqLen, pad);
  double first = 0, last = 0, accuracy = 0;
  for (int i = 0; i < kSteps; ++i) {
    auto r = trainer->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    if (i == 0) first = r->loss;
    last = r->loss;
    accuracy = r->metrics.at("dpo/accuracy");
  }
  const PreferenceAccuracy after = EvaluatePreferenceAccuracy(trainer->model(), *pairs, kSeqLen, pad);
  std::printf("dpo: loss %.4f -> %.4f, step accuracy %.2f, train-pair accuracy %.3f -> %.3f, margin %.3f -> %.3f\n",
              first, last, accuracy, before.accuracy, after.accuracy, before.mean_margin, after.mean_margin);
  EXPECT_LT(last, first - 0.3) << "loss " << first << " -> " << last;
  EXPECT_GE(accuracy, 0.9);
  // Measured: train-pair accuracy 0.625 -> 1.0, mean margin 0.5 -> 37 nats.
  EXPECT_GT(after.mean_margin, before.mean_margin + 5.0);
  EXPECT_GE(after.accuracy, before.accuracy + 0.25) << before.accuracy << " -> " << after.accuracy;
}

TEST(Dpo, ReferenceIsReadBackFromTheCacheAndAResumeRepeatsTheRun) {
  Fixture& f = Shared();
  const std::string cache = f.dir / "cache/reference.bin";
  std::filesystem::remove_all(f.dir / "cache");
  auto computed = f.Source(cache);
  EXPECT_FALSE(computed->reference_from_cache());
  auto cached = f.Source(cache);
  EXPECT_TRUE(cached->reference_from_cache());
  EXPECT_EQ(cached->truncated_pairs(), 0) << "the test's seq_len cuts pairs";

  // Uninterrupted: 8 steps. Interrupted: 4 steps, checkpoint, resume in a new trainer, 4 more.
  std::vector<double> straight, resumed;
  {
    auto t = f.DpoTrainer(computed.get());
    for (int i = 0; i < 8; ++i) straight.push_back(t->Step()->loss);
  }
  std::filesystem::remove_all(f.dir / "ckpt");
  std::string saved;
  {
    auto t = f.DpoTrainer(cached.get(), f.dir / "ckpt");
    for (int i = 0; i < 4; ++i) resumed.push_back(t->Step()->loss);
    auto dir = t->SaveCheckpoint(false);
    ASSERT_TRUE(dir.ok()) << dir.status();
    saved = *dir;
  }
  auto again = f.Source(cache);
  auto t = f.DpoTrainer(again.get(), f.dir / "ckpt", saved);
  for (int i = 0; i < 4; ++i) resumed.push_back(t->Step()->loss);
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(straight[i], resumed[i]) << "step " << i + 1;
}

// A reward_model stage: the LM head's row for the end-of-turn token read at the end of each
// completion is the scalar head, trained with the Bradley–Terry loss on the same pairs.
TEST(RewardModel, TrainingRanksTheChosenAnswersHigher) {
  Fixture& f = Shared();
  PreferenceSourceOptions po;
  po.path = f.dir / "train.jsonl";
  po.seed = 9;
  po.epochs = 1000;
  po.with_reference = false;
  auto source = PreferenceBatchSource::Open(po, *f.tokenizer);
  ASSERT_TRUE(source.ok()) << source.status();
  auto pairs = ReadPreferenceExamples(po.path, data::ChatTemplate::kChatML, *f.tokenizer);
  ASSERT_TRUE(pairs.ok());
  TrainerOptions o = f.Options();
  o.init_from = f.reference;
  const int32_t reward_token = *data::EndOfTurnToken(data::ChatTemplate::kChatML, *f.tokenizer);
  o.objective = std::make_shared<RewardModelObjective>(reward_token, 0.0);
  auto trainer = Trainer::Create(o, source->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const int32_t pad = f.tokenizer->pad_id() >= 0 ? f.tokenizer->pad_id() : f.tokenizer->eos_id();
  const PreferenceAccuracy before =
      EvaluateRewardAccuracy((*trainer)->model(), *pairs, kSeqLen, pad, reward_token);
  double first = 0, last = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    if (i == 0) first = r->loss;
    last = r->loss;
    ASSERT_TRUE(r->metrics.contains("rm/accuracy"));
  }
  const PreferenceAccuracy after = EvaluateRewardAccuracy((*trainer)->model(), *pairs, kSeqLen, pad, reward_token);
  std::printf("reward model: loss %.4f -> %.4f, train-pair accuracy %.3f -> %.3f\n", first, last, before.accuracy,
              after.accuracy);
  EXPECT_LT(last, first);
  EXPECT_GE(after.accuracy, 0.9);
  EXPECT_GT(after.mean_margin, before.mean_margin);
}

// A dpo stage's ranks split the reference's work and sum it: each rank ends with exactly what
// one process computes (compared through the cache files, header and values byte for byte).
TEST(Dpo, RanksSplittingTheReferenceComputeWhatOneProcessComputes) {
  Fixture& f = Shared();
  const std::string single = f.dir / "reference_single.bin";
  f.Source(single);
  const std::vector<absl::Status> results = testing::OnGlooRanks(2, [&](Communicator& group) -> absl::Status {
    PreferenceSourceOptions po;
    po.path = f.dir / "train.jsonl";
    po.seed = 9;
    auto source = PreferenceBatchSource::Open(po, *f.tokenizer);
    Transformer model(*TransformerConfig::FromProto(f.Options().model));
    if (auto loaded = LoadWeights(f.reference, &model); !loaded.ok()) return loaded.status();
    return (*source)->ComputeReference(model, f.reference, kSeqLen,
                                       f.dir / ("reference_rank" + std::to_string(group.rank()) + ".bin"), &group);
  });
  for (const absl::Status& s : results) ASSERT_TRUE(s.ok()) << s;
  const auto expected = ReadFile(single);
  ASSERT_TRUE(expected.ok());
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(*ReadFile(f.dir / ("reference_rank" + std::to_string(rank) + ".bin")), *expected) << rank;
  }
}

TEST(Dpo, AnOddMicroBatchIsRefused) {
  Fixture& f = Shared();
  auto source = f.Source("");
  TrainerOptions o = f.Options();
  o.stage.mutable_parallel()->set_micro_batch_size(1);
  o.init_from = f.reference;
  o.objective = std::make_shared<PreferenceObjective>(kernels::cpu::DpoOptions{});
  auto trainer = Trainer::Create(o, source.get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto r = (*trainer)->Step();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("even parallel.micro_batch_size"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace loom::engine
