#include "worker/engine/training/schedules.h"

#include <gtest/gtest.h>

namespace loom::engine {
namespace {

loom::v1::LrSchedule Schedule(loom::v1::LrSchedule::Type type, int64_t warmup, double min_ratio,
                              double decay_fraction = 0.2) {
  loom::v1::LrSchedule s;
  s.set_type(type);
  s.set_warmup_tokens(warmup);
  s.set_min_lr_ratio(min_ratio);
  s.set_decay_fraction(decay_fraction);
  return s;
}

TEST(LearningRate, WarmupThenCosineToTheMinimum) {
  const auto s = Schedule(loom::v1::LrSchedule::TYPE_COSINE, 1000, 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 0, 11000), 1.0 / 1000);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 499, 11000), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 1000, 11000), 1.0);
  EXPECT_NEAR(LearningRate(s, 1.0, 6000, 11000), 0.55, 1e-12);  // halfway: (1 + 0.1) / 2
  EXPECT_NEAR(LearningRate(s, 1.0, 11000, 11000), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate(s, 1.0, 20000, 11000), 0.1, 1e-12);  // clamped past the end
}

TEST(LearningRate, LinearAnnealsToZero) {
  const auto s = Schedule(loom::v1::LrSchedule::TYPE_LINEAR, 0, 0.0);
  EXPECT_DOUBLE_EQ(LearningRate(s, 2e-3, 0, 4000), 2e-3);
  EXPECT_DOUBLE_EQ(LearningRate(s, 2e-3, 3000, 4000), 0.5e-3);
  EXPECT_DOUBLE_EQ(LearningRate(s, 2e-3, 4000, 4000), 0.0);
}

TEST(LearningRate, WsdIsFlatUntilTheDecayFraction) {
  const auto s = Schedule(loom::v1::LrSchedule::TYPE_WSD, 100, 0.0, 0.25);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 100, 1000), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 750, 1000), 1.0);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 875, 1000), 0.5);
  EXPECT_DOUBLE_EQ(LearningRate(s, 1.0, 1000, 1000), 0.0);
}

TEST(LearningRate, ConstantIgnoresProgress) {
  const auto s = Schedule(loom::v1::LrSchedule::TYPE_CONSTANT, 0, 0.1);
  EXPECT_DOUBLE_EQ(LearningRate(s, 3e-4, 0, 100), 3e-4);
  EXPECT_DOUBLE_EQ(LearningRate(s, 3e-4, 99, 100), 3e-4);
}

TEST(Schedules, BatchAndSequenceLengthFollowTheirEntries) {
  loom::v1::Stage stage;
  for (auto [at, b] : {std::pair<int64_t, int64_t>{0, 4}, {252, 8}, {2870, 16}}) {
    auto* e = stage.add_batch_ramp();
    e->set_at_tokens(at);
    e->set_global_batch_tokens(b);
  }
  auto* s = stage.add_seq_len_schedule();
  s->set_seq_len(4096);
  s = stage.add_seq_len_schedule();
  s->set_at_tokens(252);
  s->set_seq_len(8192);
  EXPECT_EQ(GlobalBatchTokens(stage, 251), 4);
  EXPECT_EQ(GlobalBatchTokens(stage, 252), 8);
  EXPECT_EQ(GlobalBatchTokens(stage, 3000), 16);
  EXPECT_EQ(SeqLen(stage, 251), 4096);
  EXPECT_EQ(SeqLen(stage, 252), 8192);
}

}  // namespace
}  // namespace loom::engine
