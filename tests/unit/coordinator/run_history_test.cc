#include "coordinator/run_history.h"

#include <filesystem>

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/run_history_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

loom::v1::Progress Step(int64_t step, int attempt = 1) {
  loom::v1::Progress p;
  p.mutable_rank()->set_job_id("p-1/core");
  p.mutable_rank()->set_attempt(attempt);
  p.set_step(step);
  p.set_tokens(step * 100);
  p.set_loss(10.0 / static_cast<double>(step + 1));
  p.set_learning_rate(1e-3);
  p.set_grad_norm(0.5);
  p.set_tokens_per_second(1000);
  p.set_time_ms(1000 + step);
  return p;
}

std::vector<int64_t> Steps(const std::vector<loom::v1::MetricPoint>& points) {
  std::vector<int64_t> out;
  for (const auto& p : points) out.push_back(p.step());
  return out;
}

TEST(RunHistory, KeepsEveryFigureAndSurvivesReopen) {
  const std::string dir = FreshDir("reopen");
  {
    auto store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    RunHistory history(store->get(), 100);
    for (int64_t s = 1; s <= 5; ++s) ASSERT_TRUE(history.Record("p-1", "core", Step(s)).ok());
    ASSERT_TRUE(history.Record("p-1", "sft", Step(1)).ok());
  }
  auto store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  RunHistory history(store->get(), 100);
  auto points = history.Read("p-1", "core");
  ASSERT_TRUE(points.ok()) << points.status();
  ASSERT_EQ(Steps(*points), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  const loom::v1::MetricPoint& p = (*points)[2];
  EXPECT_EQ(p.stage(), "core");
  EXPECT_EQ(p.attempt(), 1);
  EXPECT_EQ(p.tokens(), 300);
  EXPECT_DOUBLE_EQ(p.loss(), 10.0 / 4);
  EXPECT_DOUBLE_EQ(p.learning_rate(), 1e-3);
  EXPECT_DOUBLE_EQ(p.grad_norm(), 0.5);
  EXPECT_DOUBLE_EQ(p.tokens_per_second(), 1000);
  EXPECT_EQ(p.time_ms(), 1003);
  // The store's own state loads as before: history keys are not plans.
  auto contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_TRUE(contents->plans.empty());
  EXPECT_EQ(history.Read("p-1", "sft")->size(), 1u);
}

TEST(RunHistory, EvaluationOfTheSameStepMergesIntoItsPoint) {
  auto store = Store::Open(FreshDir("merge"));
  ASSERT_TRUE(store.ok());
  RunHistory history(store->get(), 100);
  ASSERT_TRUE(history.Record("p-1", "core", Step(10)).ok());
  loom::v1::Progress eval;
  eval.mutable_rank()->set_attempt(1);
  eval.set_step(10);
  (*eval.mutable_eval_loss())["held_out"] = 2.5;
  ASSERT_TRUE(history.Record("p-1", "core", eval).ok());
  auto points = history.Read("p-1", "core");
  ASSERT_EQ(points->size(), 1u);
  EXPECT_DOUBLE_EQ((*points)[0].loss(), 10.0 / 11);
  EXPECT_DOUBLE_EQ((*points)[0].eval_loss().at("held_out"), 2.5);
}

TEST(RunHistory, FullHistoryIsThinnedEvenlyKeepingTheNewest) {
  const std::string dir = FreshDir("thin");
  constexpr int kMax = 10;
  {
    auto store = Store::Open(dir);
    ASSERT_TRUE(store.ok());
    RunHistory history(store->get(), kMax);
    for (int64_t s = 1; s <= 25; ++s) {
      ASSERT_TRUE(history.Record("p-1", "core", Step(s)).ok());
      auto points = history.Read("p-1", "core");
      ASSERT_LE(points->size(), static_cast<size_t>(kMax)) << "after step " << s;
      EXPECT_EQ(points->back().step(), s) << "the newest point must be kept";
    }
    // 25 steps in at most 10 points: stride 4 (4, 8, ..., 24) and the newest.
    EXPECT_EQ(Steps(*history.Read("p-1", "core")), (std::vector<int64_t>{4, 8, 12, 16, 20, 24, 25}));
  }
  // The stride survives a restart: new points follow it, the last-only point goes.
  auto store = Store::Open(dir);
  ASSERT_TRUE(store.ok());
  RunHistory history(store->get(), kMax);
  for (int64_t s = 26; s <= 29; ++s) ASSERT_TRUE(history.Record("p-1", "core", Step(s)).ok());
  EXPECT_EQ(Steps(*history.Read("p-1", "core")), (std::vector<int64_t>{4, 8, 12, 16, 20, 24, 28, 29}));
}

TEST(RunHistory, RerunStepsOfALaterAttemptAreKeptBeside) {
  auto store = Store::Open(FreshDir("attempts"));
  ASSERT_TRUE(store.ok());
  RunHistory history(store->get(), 100);
  for (int64_t s = 1; s <= 4; ++s) ASSERT_TRUE(history.Record("p-1", "core", Step(s, 1)).ok());
  for (int64_t s = 3; s <= 5; ++s) ASSERT_TRUE(history.Record("p-1", "core", Step(s, 2)).ok());
  auto points = history.Read("p-1", "core");
  ASSERT_EQ(points->size(), 7u);
  EXPECT_EQ(Steps(*points), (std::vector<int64_t>{1, 2, 3, 3, 4, 4, 5}));
  EXPECT_EQ((*points)[2].attempt(), 1);
  EXPECT_EQ((*points)[3].attempt(), 2);
}

TEST(RunHistory, ForgetPlanDeletesOnlyThatPlan) {
  auto store = Store::Open(FreshDir("forget"));
  ASSERT_TRUE(store.ok());
  RunHistory history(store->get(), 100);
  ASSERT_TRUE(history.Record("p-1", "core", Step(1)).ok());
  ASSERT_TRUE(history.Record("p-12", "core", Step(1)).ok());
  ASSERT_TRUE(history.ForgetPlan("p-1").ok());
  EXPECT_TRUE(history.Read("p-1", "core")->empty());
  EXPECT_EQ(history.Read("p-12", "core")->size(), 1u);
  // A job recorded again after being forgotten starts afresh.
  ASSERT_TRUE(history.Record("p-1", "core", Step(7)).ok());
  EXPECT_EQ(Steps(*history.Read("p-1", "core")), (std::vector<int64_t>{7}));
}

}  // namespace
}  // namespace loom::coordinator
