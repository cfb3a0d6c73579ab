// Post-training raises what is measured on problems it never trained on. A tiny model is first
// SFT-trained part of the way on small sums (data/math_gen.h MathLevel::kSmallSums: a two-digit
// number plus or minus a digit, bare or in a sentence), far enough that it answers some unseen
// problems; then, each from that same starting checkpoint and each measured on held-out problems
// whose arithmetic never appears in training:
//   - SFT on its own rejection-sampled, verifier-kept answers raises greedy held-out accuracy;
//   - the rl stage's RLOO on the training prompts raises greedy held-out accuracy;
//   - a reward model trained on the training pairs ranks held-out pairs well above chance;
//   - DPO on the training pairs raises held-out preference accuracy over the SFT model.
// These are the same engine pieces the stages run (ChatBatchSource, SampleAndVerify,
// RlBatchSource, PreferenceBatchSource, the trainer's modes, EvaluateMathAccuracy).
#include <cctype>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "data/math_gen.h"
#include "engine_test_util.h"
#include "nlohmann/json.hpp"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/sources/chat_source.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/evaluation/math_eval.h"
#include "worker/engine/sources/preference_source.h"
#include "worker/engine/stages/rejection_sampling.h"
#include "worker/engine/sources/rl_source.h"
#include "worker/engine/training/trainer.h"
#include "worker/engine/evaluation/preference_accuracy.h"
#include "worker/engine/training/policy_gradient_objective.h"
#include "worker/engine/training/preference_objective.h"
#include "worker/engine/training/reward_model_objective.h"

namespace loom::engine {
namespace {

using loom::testing::TinyPlan;

constexpr int kSeqLen = 128;
constexpr uint64_t kProblemSeed = 2026;
constexpr int kRows = 8;
constexpr int kTrainProblems = 1200;
constexpr int kHeldOutProblems = 512;
// The base: SFT until a dev set's greedy accuracy reaches kBaseDevAccuracy (checked every 100
// steps from kFirstCheck), the point where it answers some unseen problems and has room to learn;
// the model at kEarlySteps (format and copying learnt, arithmetic not yet) is kept too.
constexpr int kMaxBaseSteps = 4000;
constexpr int kFirstCheck = 1200;
constexpr double kBaseDevAccuracy = 0.3;
constexpr int kEarlySteps = 150;
constexpr int kDevProblems = 64;
// Asserted margins. Measured (problem seed 2026, as committed): RS-SFT held-out 0.477 -> 0.604,
// rl 0.477 -> 0.621, reward model 0.775 on 512 held-out pairs, DPO implicit-reward accuracy 0.719
// (likelihood ranking 0.699 -> 0.701, margin 3.9 -> 13.2). Seeds 2027 / 2028: RS-SFT +0.18 /
// +0.06, rl +0.24 / +0.11, reward model 0.81 / 0.75, DPO 0.76 / 0.71. The smallest gains, less
// noise (512 problems: about 0.02), or a clear margin over chance (0.5).
constexpr double kRsSftGain = 0.04;
constexpr double kRlGain = 0.08;
constexpr double kRewardModelAccuracy = 0.65;
constexpr double kDpoImplicitAccuracy = 0.62;

struct Task {
  data::testing::TempDir dir;
  std::unique_ptr<data::Tokenizer> tokenizer;
  loom::v1::TrainingPlan plan;
  std::vector<data::Conversation> train, heldout;
  std::string train_jsonl, train_pairs_jsonl, heldout_pairs_jsonl;
  std::vector<data::PreferenceExample> train_pairs, heldout_pairs;
  std::vector<data::Conversation> dev;
  std::string base;  // the partly trained SFT model post-training runs start from
  std::string early;
  int64_t base_steps = 0;
  double base_accuracy = 0;
  int32_t pad = 0;

  TrainerOptions Options(double lr) const {
    TrainerOptions o;
    o.model = plan.model();
    o.model.set_vocab_size(tokenizer->vocab_size());
    o.model.set_d_model(128);
    o.model.set_ffn_size(256);
    o.stage = ResolveStage(plan, 0);
    o.stage.mutable_optimizer()->set_lr(lr);
    o.stage.mutable_optimizer()->set_weight_decay(0.1);
    return o;
  }
};

// The problem's arithmetic ("47 + 5", from the question's two numbers and its operation):
// held-out problems share none with training ones.
std::string Arithmetic(const data::MathProblem& p) {
  std::vector<std::string> numbers(1);
  for (char c : p.question) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      numbers.back() += c;
    } else if (!numbers.back().empty()) {
      numbers.emplace_back();
    }
  }
  const bool plus = p.question.find(" + ") != std::string::npos || p.question.find(" gets ") != std::string::npos;
  return absl::StrCat(numbers[0], plus ? " + " : " - ", numbers[1]);
}

double Accuracy(const Task& t, const Transformer& model, const std::vector<data::Conversation>& problems) {
  MathEvalOptions o;
  o.max_problems = 0;
  o.max_new_tokens = 24;
  o.batch = 32;
  auto r = EvaluateMathAccuracy(model, *t.tokenizer, problems, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? static_cast<double>(r->correct) / r->problems : 0.0;
}
double HeldOutAccuracy(const Task& t, const Transformer& model) { return Accuracy(t, model, t.heldout); }

// SFT from `init` (empty: random) on the conversations in `jsonl`, `steps` steps at `lr`.
std::unique_ptr<Trainer> Sft(const Task& t, const std::string& init, const std::string& jsonl, int steps, double lr,
                             std::unique_ptr<ChatBatchSource>* source) {
  loom::v1::Stage stage;
  stage.set_name("sft");
  stage.mutable_dataset()->set_epochs(1000);
  *source = std::move(*ChatBatchSource::Open(stage, jsonl, *t.tokenizer, 17));
  TrainerOptions o = t.Options(lr);
  o.init_from = init;
  o.max_steps = steps;
  auto trainer = Trainer::Create(o, source->get());
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  return std::move(*trainer);
}

Task& SharedTask() {
  static Task* task = [] {
    auto* t = new Task();
    t->tokenizer = std::move(*data::Tokenizer::Load(data::testing::TinyTokenizerModel(320)));
    t->pad = t->tokenizer->pad_id() >= 0 ? t->tokenizer->pad_id() : t->tokenizer->eos_id();
    t->plan = TinyPlan(absl::StrCat(R"(    tokens: 100M
    optimizer: {lr: 3e-3, weight_decay: 0}
    lr_schedule: {type: constant}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: )",
                                    kSeqLen * kRows, R"(}]
    seq_len_schedule: [{at_tokens: 0, seq_len: )",
                                    kSeqLen, R"(}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)"),
                       "");
    // Problems, their pairs, and the split: held-out arithmetic never occurs in training.
    data::SplitMix64 rng(kProblemSeed);
    std::set<std::string> seen;
    std::string train_text, train_pairs, heldout_pairs;
    while (static_cast<int>(t->heldout.size()) < kHeldOutProblems) {
      const data::MathProblem p = data::GenerateMathProblem(rng, data::MathLevel::kSmallSums);
      const bool to_train = static_cast<int>(t->train.size()) < kTrainProblems;
      if (!to_train && seen.contains(Arithmetic(p))) continue;
      seen.insert(Arithmetic(p));
      const data::Conversation c = {{"user", p.question}, {"assistant", p.solution}};
      if (!to_train && static_cast<int>(t->dev.size()) < kDevProblems) {
        t->dev.push_back(c);
        continue;
      }
      const std::string pair =
          nlohmann::json{{"prompt", p.question}, {"chosen", p.solution}, {"rejected", data::WrongSolution(p, rng)}}
              .dump() +
          "\n";
      (to_train ? t->train : t->heldout).push_back(c);
      (to_train ? train_pairs : heldout_pairs) += pair;
    }
    t->train_jsonl = t->dir / "train.jsonl";
    data::testing::WriteText(t->train_jsonl, ConversationsToJsonl(t->train));
    t->train_pairs_jsonl = t->dir / "train_pairs.jsonl";
    t->heldout_pairs_jsonl = t->dir / "heldout_pairs.jsonl";
    data::testing::WriteText(t->train_pairs_jsonl, train_pairs);
    data::testing::WriteText(t->heldout_pairs_jsonl, heldout_pairs);
    t->train_pairs = *ReadPreferenceExamples(t->train_pairs_jsonl, data::ChatTemplate::kChatML, *t->tokenizer);
    t->heldout_pairs = *ReadPreferenceExamples(t->heldout_pairs_jsonl, data::ChatTemplate::kChatML, *t->tokenizer);

    std::unique_ptr<ChatBatchSource> source;
    auto trainer = Sft(*t, "", t->train_jsonl, kMaxBaseSteps, 1e-3, &source);
    loom::v1::CheckpointManifest manifest;
    *manifest.mutable_model() = trainer->effective_model();
    t->base = t->dir / "base";
    t->early = t->dir / "early";
    double dev = 0;
    while (!trainer->Done()) {
      auto r = trainer->Step();
      EXPECT_TRUE(r.ok()) << r.status();
      if (trainer->step() == kEarlySteps) {
        EXPECT_TRUE(SaveCheckpoint(t->early, trainer->model(), nullptr, manifest).ok());
      }
      if (trainer->step() >= kFirstCheck && trainer->step() % 100 == 0) {
        dev = Accuracy(*t, trainer->model(), t->dev);
        if (dev >= kBaseDevAccuracy) break;
      }
    }
    EXPECT_TRUE(SaveCheckpoint(t->base, trainer->model(), nullptr, manifest).ok());
    t->base_steps = trainer->step();
    t->base_accuracy = HeldOutAccuracy(*t, trainer->model());
    std::printf("base: SFT %lld steps (dev accuracy %.3f), held-out accuracy %.3f\n", (long long)t->base_steps, dev,
                t->base_accuracy);
    return t;
  }();
  return *task;
}

TEST(HeldOutLearning, TheStartingModelAnswersSomeUnseenProblems) {
  const Task& t = SharedTask();
  EXPECT_GT(t.base_accuracy, 0.05);
  EXPECT_LT(t.base_accuracy, 0.8) << "no room left to show learning";
}

TEST(HeldOutLearning, SftOnRejectionSampledAnswersRaisesHeldOutAccuracy) {
  const Task& t = SharedTask();
  auto base = LoadModel(t.base);
  ASSERT_TRUE(base.ok()) << base.status();
  RejectionSamplingOptions rs;
  rs.samples_per_prompt = 4;
  rs.sampling.temperature = 1.0f;
  rs.sampling.max_new_tokens = 24;
  rs.sampling.seed = 5;
  rs.keep = RejectionSamplingOptions::Keep::kAllCorrect;
  auto sampled = SampleAndVerify(**base, *t.tokenizer, t.train, 0, t.train.size(), rs);
  ASSERT_TRUE(sampled.ok()) << sampled.status();
  const std::string kept = t.dir / "rs.jsonl";
  data::testing::WriteText(kept, ConversationsToJsonl(sampled->kept));
  std::unique_ptr<ChatBatchSource> source;
  auto trainer = Sft(t, t.base, kept, 500, 1e-3, &source);
  ASSERT_TRUE(trainer->Run(nullptr, nullptr).ok());
  const double after = HeldOutAccuracy(t, trainer->model());
  std::printf("rejection sampling: pass@1 %.3f, best-of-4 %.3f, %zu kept; SFT on them: held-out %.3f -> %.3f\n",
              sampled->pass_at_1(), sampled->best_of_n(), sampled->kept.size(), t.base_accuracy, after);
  EXPECT_GE(sampled->best_of_n(), sampled->pass_at_1());
  EXPECT_GT(after, t.base_accuracy + kRsSftGain);
}

TEST(HeldOutLearning, RlRaisesHeldOutAccuracy) {
  const Task& t = SharedTask();
  RlSourceOptions so;
  so.path = t.train_jsonl;
  so.seed = 3;
  so.epochs = 1000;
  so.samples_per_prompt = 8;
  so.sampling.temperature = 1.0f;
  so.sampling.max_new_tokens = 24;
  so.kl_coef = 0.01;
  auto source = RlBatchSource::Open(so, *t.tokenizer);
  ASSERT_TRUE(source.ok()) << source.status();
  auto reference = LoadModel(t.base);
  ASSERT_TRUE(reference.ok());
  TrainerOptions o = t.Options(3e-4);
  o.stage.mutable_optimizer()->set_weight_decay(0);
  o.stage.mutable_batch_ramp(0)->set_global_batch_tokens(int64_t{kSeqLen} * so.samples_per_prompt * 16);
  o.init_from = t.base;
  o.objective = std::make_shared<PolicyGradientObjective>();
  auto trainer = Trainer::Create(o, source->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  (*source)->SetModels(&(*trainer)->model(), reference->get());
  double first = 0, last = 0;
  const int rl_steps = 50;
  for (int i = 0; i < rl_steps; ++i) {
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    (i == 0 ? first : last) = r->metrics.at("rl/reward");
  }
  const double after = HeldOutAccuracy(t, (*trainer)->model());
  std::printf("rl: sampled reward %.3f -> %.3f; held-out %.3f -> %.3f\n", first, last, t.base_accuracy, after);
  EXPECT_GT(after, t.base_accuracy + kRlGain);
}

TEST(HeldOutLearning, ARewardModelRanksHeldOutPairsAboveChance) {
  const Task& t = SharedTask();
  PreferenceSourceOptions po;
  po.path = t.train_pairs_jsonl;
  po.seed = 9;
  po.epochs = 1000;
  po.with_reference = false;
  auto source = PreferenceBatchSource::Open(po, *t.tokenizer);
  ASSERT_TRUE(source.ok()) << source.status();
  TrainerOptions o = t.Options(3e-4);
  o.stage.mutable_batch_ramp(0)->set_global_batch_tokens(int64_t{kSeqLen} * 32);
  o.init_from = t.base;
  const int32_t reward_token = *data::EndOfTurnToken(data::ChatTemplate::kChatML, *t.tokenizer);
  o.objective = std::make_shared<RewardModelObjective>(reward_token, 0.0);
  auto trainer = Trainer::Create(o, source->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const PreferenceAccuracy before =
      EvaluateRewardAccuracy((*trainer)->model(), t.heldout_pairs, kSeqLen, t.pad, reward_token);
  const int rm_steps = 150;
  for (int i = 0; i < rm_steps; ++i) {
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok());
  }
  const PreferenceAccuracy after =
      EvaluateRewardAccuracy((*trainer)->model(), t.heldout_pairs, kSeqLen, t.pad, reward_token);
  std::printf("reward model: held-out pair accuracy %.3f -> %.3f (%lld pairs)\n", before.accuracy, after.accuracy,
              static_cast<long long>(after.pairs));
  EXPECT_GT(after.accuracy, kRewardModelAccuracy);
}

// DPO's own preference accuracy (its implicit reward β·log π/π_ref ranks chosen over rejected),
// on pairs it never trained on: at the start every pair ties.
double ImplicitRewardAccuracy(Transformer& policy, Transformer& reference, const Task& t) {
  int64_t right = 0;
  for (size_t first = 0; first < t.heldout_pairs.size(); first += 8) {
    const size_t n = std::min<size_t>(8, t.heldout_pairs.size() - first);
    const data::TokenBatch rows = PreferenceRows(t.heldout_pairs, first, n, kSeqLen, t.pad);
    const std::vector<double> p = RowLogProbSums(policy, rows), r = RowLogProbSums(reference, rows);
    for (size_t i = 0; i < n; ++i) right += p[2 * i] - r[2 * i] > p[2 * i + 1] - r[2 * i + 1];
  }
  return static_cast<double>(right) / t.heldout_pairs.size();
}

TEST(HeldOutLearning, DpoRaisesHeldOutPreferenceAccuracy) {
  const Task& t = SharedTask();
  const std::string dpo_from = t.early;
  PreferenceSourceOptions po;
  po.path = t.train_pairs_jsonl;
  po.seed = 9;
  po.epochs = 1000;
  auto source = PreferenceBatchSource::Open(po, *t.tokenizer);
  ASSERT_TRUE(source.ok()) << source.status();
  auto reference = LoadModel(dpo_from);
  ASSERT_TRUE(reference.ok());
  ASSERT_TRUE((*source)->ComputeReference(**reference, dpo_from, kSeqLen, "").ok());
  const PreferenceAccuracy before = EvaluatePreferenceAccuracy(**reference, t.heldout_pairs, kSeqLen, t.pad);
  TrainerOptions o = t.Options(1e-4);
  o.stage.mutable_optimizer()->set_weight_decay(0);
  o.stage.mutable_batch_ramp(0)->set_global_batch_tokens(int64_t{kSeqLen} * 32);
  o.init_from = dpo_from;
  kernels::cpu::DpoOptions dpo;
  dpo.beta = 0.1;
  o.objective = std::make_shared<PreferenceObjective>(dpo);
  auto trainer = Trainer::Create(o, source->get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const int dpo_steps = 100;
  for (int i = 0; i < dpo_steps; ++i) {
    ASSERT_TRUE((*trainer)->Step().ok());
  }
  const PreferenceAccuracy after = EvaluatePreferenceAccuracy((*trainer)->model(), t.heldout_pairs, kSeqLen, t.pad);
  const double implicit = ImplicitRewardAccuracy((*trainer)->model(), **reference, t);
  std::printf("dpo: held-out preference accuracy %.3f -> %.3f, margin %.3f -> %.3f; implicit-reward accuracy %.3f\n", before.accuracy,
              after.accuracy, before.mean_margin, after.mean_margin, implicit);
  // The preference DPO learnt holds on unseen pairs (chance: 0.5), and ranking by the policy's
  // own likelihood does not get worse.
  EXPECT_GT(implicit, kDpoImplicitAccuracy);
  EXPECT_GT(after.mean_margin, before.mean_margin + 2.0);
  EXPECT_GE(after.accuracy, before.accuracy - 0.02);
}

}  // namespace
}  // namespace loom::engine
