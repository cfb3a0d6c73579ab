// A distill stage: the teacher runs beside the student on every micro-batch. With the student
// equal to the teacher the soft cross-entropy is the teacher's entropy and the gradient vanishes;
// a fresh, smaller student learns from the teacher.
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "kernels/cpu/cross_entropy.h"
#include "worker/engine/trainer.h"

namespace loom::engine {
namespace {

using loom::testing::RepetitiveText;
using loom::testing::TinyPlan;

std::vector<int32_t> Bytes(const std::string& text) { return std::vector<int32_t>(text.begin(), text.end()); }

constexpr char kStage[] = R"(    tokens: 100K
    optimizer: {lr: 3e-3}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)";

// Trains the teacher once and returns its checkpoint.
const std::string& Teacher() {
  static const std::string dir = [] {
    const std::string d = ::testing::TempDir() + "/distill_teacher";
    std::filesystem::remove_all(d);
    const auto plan = TinyPlan(kStage);
    TokenStreamSource data(Bytes(RepetitiveText()));
    TrainerOptions o;
    o.model = plan.model();
    o.stage = ResolveStage(plan, 0);
    o.checkpoint_dir = d;
    o.max_steps = 60;
    auto trainer = Trainer::Create(o, &data);
    EXPECT_TRUE(trainer.ok());
    EXPECT_TRUE((*trainer)->Run(nullptr, nullptr).ok());
    return d + "/step-000060";
  }();
  return dir;
}

TEST(Distill, StudentEqualToTeacherHasTheTeacherEntropyAndNoGradient) {
  const auto plan = TinyPlan(kStage);
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions o;
  o.model = plan.model();
  o.stage = ResolveStage(plan, 0);
  o.init_from = Teacher();
  o.teacher_from = Teacher();
  auto trainer = Trainer::Create(o, &data);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  auto step = (*trainer)->Step();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_LT(step->grad_norm, 1e-5);
  // The loss is the mean entropy of the teacher's predictions on this batch: positive, and
  // below the plain cross-entropy of the trained model on the same text (which it lower-bounds
  // only loosely, but a trained model on repetitive text is confident).
  EXPECT_GT(step->loss, 0.01);
  EXPECT_LT(step->loss, 2.0);
}

TEST(Distill, AFreshSmallerStudentLearnsFromTheTeacher) {
  const auto plan = TinyPlan(kStage);
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions o;
  o.model = plan.model();
  o.model.set_layers(1);
  o.model.set_d_model(32);
  o.model.set_heads(2);
  o.model.set_kv_heads(1);
  o.stage = ResolveStage(plan, 0);
  o.teacher_from = Teacher();
  o.distill.mode = kernels::cpu::DistillOptions::Mode::kSoftCrossEntropy;
  o.distill.top_k = 8;
  auto trainer = Trainer::Create(o, &data);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  double first = 0, last = 0;
  for (int i = 0; i < 60; ++i) {
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok()) << r.status();
    if (i == 0) first = r->loss;
    last = r->loss;
  }
  EXPECT_LT(last, first - 2.0) << "distillation loss did not fall: " << first << " -> " << last;
}

TEST(Distill, TeacherWithAnotherVocabularyIsRefused) {
  const auto plan = TinyPlan(kStage);
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions o;
  o.model = plan.model();
  o.model.set_vocab_size(300);
  o.stage = ResolveStage(plan, 0);
  o.teacher_from = Teacher();
  auto trainer = Trainer::Create(o, &data);
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("tokenizer"), std::string::npos) << trainer.status();
}

}  // namespace
}  // namespace loom::engine
