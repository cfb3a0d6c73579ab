// StragglerDetector: who is flagged, when, and when the flag clears.
#include "coordinator/straggler.h"

#include <vector>

#include "gtest/gtest.h"

namespace loom::coordinator {
namespace {

// `ranks` ranks run `steps` steps from `first`; compute(rank, step) gives each one's seconds.
template <typename F>
std::vector<StragglerDetector::Verdict> Steps(StragglerDetector& d, int ranks, int64_t first, int steps, F compute) {
  for (int64_t step = first; step < first + steps; ++step) {
    for (int r = 0; r < ranks; ++r) d.Record(r, step, compute(r, step), step * 100);
  }
  return d.Evaluate((first + steps) * 100);
}

StragglerSettings Settings() { return {.window_steps = 20, .ratio = 1.3, .min_excess_seconds = 0.01, .evaluate_every_ms = 0}; }

TEST(StragglerDetector, FlagsTheSlowRankOnlyOnceItsWindowIsFull) {
  StragglerDetector d(Settings());
  auto compute = [](int r, int64_t) { return r == 2 ? 0.2 : 0.1; };
  EXPECT_TRUE(Steps(d, 4, 1, 19, compute).empty()) << "19 steps are less than the window";
  const std::vector<StragglerDetector::Verdict> v = Steps(d, 4, 20, 1, compute);
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].rank, 2);
  EXPECT_DOUBLE_EQ(v[0].compute_seconds, 0.2);
  EXPECT_DOUBLE_EQ(v[0].peers_compute_seconds, 0.1);
}

TEST(StragglerDetector, EvenRanksAndNoiseFlagNobody) {
  StragglerDetector d(Settings());
  // +-20% noise that moves around the ranks, and one rank with a few very slow steps (a
  // checkpoint, a page fault): under half the window, so its median does not move.
  auto compute = [](int r, int64_t step) {
    double s = 0.1 * (1 + 0.2 * (((step + r) % 3) - 1));
    if (r == 1 && step % 5 == 0) s = 1.0;
    return s;
  };
  EXPECT_TRUE(Steps(d, 3, 1, 60, compute).empty());
}

TEST(StragglerDetector, JustUnderTheRatioIsNotFlaggedJustOverIs) {
  StragglerDetector under(Settings()), over(Settings());
  EXPECT_TRUE(Steps(under, 3, 1, 20, [](int r, int64_t) { return r == 0 ? 0.129 : 0.1; }).empty());
  EXPECT_EQ(Steps(over, 3, 1, 20, [](int r, int64_t) { return r == 0 ? 0.131 : 0.1; }).size(), 1u);
}

TEST(StragglerDetector, TinyStepsNeedTheAbsoluteExcessToo) {
  // 3 ms against 1 ms is 3x, but 2 ms is scheduling noise, not a host to look at.
  StragglerDetector d(Settings());
  EXPECT_TRUE(Steps(d, 3, 1, 20, [](int r, int64_t) { return r == 0 ? 0.003 : 0.001; }).empty());
}

TEST(StragglerDetector, TwoRanksCompareWithEachOther) {
  StragglerDetector d(Settings());
  const auto v = Steps(d, 2, 1, 20, [](int r, int64_t) { return r == 1 ? 0.3 : 0.1; });
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].rank, 1);
}

TEST(StragglerDetector, ClearsOnceTheRankIsFastAgainForMostOfTheWindow) {
  StragglerDetector d(Settings());
  auto slow = [](int r, int64_t) { return r == 0 ? 0.3 : 0.1; };
  auto even = [](int, int64_t) { return 0.1; };
  ASSERT_EQ(Steps(d, 3, 1, 20, slow).size(), 1u);
  EXPECT_EQ(Steps(d, 3, 21, 9, even).size(), 1u) << "9 fast steps of 20: still slow in most of the window";
  EXPECT_TRUE(Steps(d, 3, 30, 2, even).empty()) << "11 fast steps of 20";
}

TEST(StragglerDetector, RepeatedStepReportsCountOnce) {
  StragglerDetector d(Settings());
  // Rank 0 reports step 1 twenty times (e.g. a measures-only report): one sample, no full window.
  for (int i = 0; i < 20; ++i) d.Record(0, 1, 0.5, 0);
  for (int64_t s = 1; s <= 20; ++s) d.Record(1, s, 0.1, 0);
  EXPECT_TRUE(d.Evaluate(0).empty());
}

TEST(StragglerDetector, EvaluationIsDueAtMostOncePerInterval) {
  StragglerDetector d({.window_steps = 20, .ratio = 1.3, .min_excess_seconds = 0.01, .evaluate_every_ms = 1000});
  EXPECT_TRUE(d.Record(0, 1, 0.1, 5000));
  d.Evaluate(5000);
  EXPECT_FALSE(d.Record(1, 1, 0.1, 5500));
  EXPECT_TRUE(d.Record(0, 2, 0.1, 6000));
}

}  // namespace
}  // namespace loom::coordinator
