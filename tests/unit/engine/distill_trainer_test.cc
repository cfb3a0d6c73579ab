// A distill stage: the teacher runs beside the student on every micro-batch. With the student
// equal to the teacher the soft cross-entropy is the teacher's entropy and the gradient vanishes;
// a fresh, smaller student learns from the teacher; and on a noisy source the distilled student
// reaches a lower held-out loss than the same student trained on the labels for the same tokens.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "engine_test_util.h"
#include "kernels/cpu/cross_entropy.h"
#include "worker/engine/model/random.h"
#include "worker/engine/training/trainer.h"
#include "worker/engine/training/distillation_objective.h"

namespace loom::engine {
namespace {

using loom::testing::RepetitiveText;
using loom::testing::TinyPlan;

// The distilled student's advantage, measured over student data seeds 2-6 at these settings:
// 0.049, 0.049, 0.043, 0.055, 0.050 nats (teacher 2.62, students about 2.81 vs 2.76). The
// assertion takes half of the smallest.
constexpr int kTeacherSteps = 200;
constexpr int kStudentSteps = 80;
constexpr double kMargin = 0.025;

std::vector<int32_t> Bytes(const std::string& text) { return std::vector<int32_t>(text.begin(), text.end()); }

constexpr char kStage[] = R"(    tokens: 100K
    optimizer: {lr: 3e-3}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)";

// The distillation objective against the teacher at `checkpoint`.
std::shared_ptr<Objective> TeacherObjective(const std::string& checkpoint,
                                            const kernels::cpu::DistillOptions& options = {}) {
  auto objective = DistillationObjective::Load(checkpoint, options);
  EXPECT_TRUE(objective.ok()) << objective.status();
  return objective.ok() ? std::shared_ptr<Objective>(std::move(*objective)) : nullptr;
}

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
  o.objective = TeacherObjective(Teacher());
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
  kernels::cpu::DistillOptions distill;
  distill.mode = kernels::cpu::DistillOptions::Mode::kSoftCrossEntropy;
  distill.top_k = 8;
  o.objective = TeacherObjective(Teacher(), distill);
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

// A seeded first-order Markov source over 24 letters whose next-letter distributions are
// spread (about 2 nats of entropy per letter), so a label is a single draw from a distribution
// the teacher's soft targets give whole.
std::vector<int32_t> MarkovTokens(int64_t count, uint64_t seed) {
  constexpr int kLetters = 24;
  Random table_rng(7);  // the chain itself is the same for every sample
  std::vector<std::vector<double>> cdf(kLetters, std::vector<double>(kLetters));
  for (auto& row : cdf) {
    double sum = 0;
    for (double& p : row) {
      const double u = table_rng.NextUniform();
      p = u * u * u;  // skewed: a few likely successors, a long tail
      sum += p;
    }
    double acc = 0;
    for (double& p : row) p = (acc += p / sum);
  }
  Random rng(seed);
  std::vector<int32_t> out(count);
  int state = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double u = rng.NextUniform();
    int next = 0;
    while (next < kLetters - 1 && cdf[state][next] < u) ++next;
    out[i] = 'a' + next;
    state = next;
  }
  return out;
}

// Mean next-token loss of `model` over `tokens` cut into rows of 64.
double HeldOutLoss(Transformer& model, const std::vector<int32_t>& tokens) {
  constexpr int kSeq = 64, kRows = 8;
  data::TokenBatch batch;
  batch.batch_size = kRows;
  batch.seq_len = kSeq;
  double sum = 0;
  int64_t counted = 0;
  for (int64_t first = 0; first + kRows * (kSeq + 1) <= static_cast<int64_t>(tokens.size());
       first += kRows * (kSeq + 1)) {
    batch.inputs.clear();
    batch.targets.clear();
    for (int r = 0; r < kRows; ++r) {
      const int32_t* row = tokens.data() + first + r * (kSeq + 1);
      batch.inputs.insert(batch.inputs.end(), row, row + kSeq);
      batch.targets.insert(batch.targets.end(), row + 1, row + kSeq + 1);
    }
    const float* logits = model.Forward(batch);
    const auto r = kernels::cpu::CrossEntropy(logits, batch.targets.data(), batch.tokens(),
                                              model.config().vocab, 0.0f, nullptr);
    sum += r.loss_sum;
    counted += r.counted;
  }
  return sum / counted;
}

// The recipe's claim for distillation (Gemma 2, AFM): the same small student, trained on the
// same tokens, reaches a lower held-out loss with a trained teacher's full distribution as its
// target than with the labels alone.
TEST(Distill, StudentBeatsTheSameStudentTrainedOnLabelsAlone) {
  const auto plan = TinyPlan(R"(    tokens: 10M
    optimizer: {lr: 3e-3}
    lr_schedule: {type: constant}
    parallel: {micro_batch_size: 8}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 0}
)");
  const std::vector<int32_t> heldout = MarkovTokens(16 * 1024, 99);
  const std::string teacher_dir = ::testing::TempDir() + "/markov_teacher";
  std::filesystem::remove_all(teacher_dir);
  double teacher_loss = 0;
  {
    TokenStreamSource data(MarkovTokens(300 * 1024, 1));
    TrainerOptions o;
    o.model = plan.model();
    o.stage = ResolveStage(plan, 0);
    o.checkpoint_dir = teacher_dir;
    o.max_steps = kTeacherSteps;
    auto trainer = Trainer::Create(o, &data);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->Run(nullptr, nullptr).ok());
    teacher_loss = HeldOutLoss((*trainer)->model(), heldout);
  }
  auto train_student = [&](bool with_teacher) -> double {
    TokenStreamSource data(MarkovTokens(300 * 1024, 2));
    TrainerOptions o;
    o.model = plan.model();
    o.model.set_layers(1);
    o.model.set_d_model(32);
    o.model.set_heads(2);
    o.model.set_kv_heads(1);
    o.model.set_ffn_size(64);
    o.stage = ResolveStage(plan, 0);
    o.max_steps = kStudentSteps;
    if (with_teacher) o.objective = TeacherObjective(teacher_dir + "/" + CheckpointDirName(kTeacherSteps));
    auto trainer = Trainer::Create(o, &data);
    EXPECT_TRUE(trainer.ok()) << trainer.status();
    if (!trainer.ok()) return 0;
    EXPECT_TRUE((*trainer)->Run(nullptr, nullptr).ok());
    return HeldOutLoss((*trainer)->model(), heldout);
  };
  const double plain = train_student(false);
  const double distilled = train_student(true);
  RecordProperty("teacher_heldout_loss", std::to_string(teacher_loss));
  RecordProperty("plain_student_heldout_loss", std::to_string(plain));
  RecordProperty("distilled_student_heldout_loss", std::to_string(distilled));
  std::printf("held-out loss: teacher %.4f, student on labels %.4f, distilled student %.4f\n", teacher_loss,
              plain, distilled);
  EXPECT_LT(distilled, plain - kMargin) << "teacher " << teacher_loss;
}

TEST(Distill, TeacherWithAnotherVocabularyIsRefused) {
  const auto plan = TinyPlan(kStage);
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions o;
  o.model = plan.model();
  o.model.set_vocab_size(300);
  o.stage = ResolveStage(plan, 0);
  o.objective = TeacherObjective(Teacher());
  auto trainer = Trainer::Create(o, &data);
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("tokenizer"), std::string::npos) << trainer.status();
}

}  // namespace
}  // namespace loom::engine
