// Whose fault a failed attempt is, and the retry policy's waits and budget, as pure functions.
#include "coordinator/failures.h"

#include <gtest/gtest.h>

#include "common/rank_exit.h"

namespace loom::coordinator {
namespace {

TEST(Failures, RankExitCodesSayWhoseFaultItIs) {
  struct Case {
    int code;
    loom::v1::FailureClass failure_class;
    const char* cause;
  } cases[] = {
      {kRankExitInputMissing, loom::v1::FAILURE_CLASS_PLAN, "input"},
      {kRankExitConfigRejected, loom::v1::FAILURE_CLASS_PLAN, "config"},
      {kRankExitTransient, loom::v1::FAILURE_CLASS_CLUSTER, "timeout"},
      {kRankExitIoError, loom::v1::FAILURE_CLASS_CLUSTER, "io"},
      {-9, loom::v1::FAILURE_CLASS_CLUSTER, "signal"},
      {1, loom::v1::FAILURE_CLASS_CLUSTER, "crash"},
      {3, loom::v1::FAILURE_CLASS_CLUSTER, "crash"},
  };
  for (const Case& c : cases) {
    const Failure f = ClassifyRankExit(c.code, "x");
    EXPECT_EQ(f.failure_class, c.failure_class) << c.code;
    EXPECT_EQ(f.cause, c.cause) << c.code;
  }
  EXPECT_EQ(Describe(ClassifyRankExit(kRankExitInputMissing, "")), "plan fault: input missing or unreadable");
  EXPECT_EQ(Describe(ClusterFault("worker_lost", "")), "cluster fault: worker lost");
}

TEST(Failures, StatusCodesMapToTheRanksExitCodes) {
  EXPECT_EQ(RankExitCodeFor(absl::NotFoundError("tokenizer")), kRankExitInputMissing);
  EXPECT_EQ(RankExitCodeFor(absl::PermissionDeniedError("shard")), kRankExitInputMissing);
  EXPECT_EQ(RankExitCodeFor(absl::InvalidArgumentError("vocab")), kRankExitConfigRejected);
  EXPECT_EQ(RankExitCodeFor(absl::DeadlineExceededError("all-reduce")), kRankExitTransient);
  EXPECT_EQ(RankExitCodeFor(absl::UnavailableError("peer")), kRankExitTransient);
  EXPECT_EQ(RankExitCodeFor(absl::ResourceExhaustedError("disk full")), kRankExitIoError);
  EXPECT_EQ(RankExitCodeFor(absl::InternalError("?")), kRankExitFailed);
  // Loading the checkpoint to resume from: corrupt or incomplete is its own code; a transient
  // error stays transient (a flaky mount must not retire a good checkpoint).
  EXPECT_EQ(RankExitCodeFor(ResumeCheckpointBad(absl::DataLossError("sha256"))), kRankExitResumeCheckpointBad);
  EXPECT_EQ(RankExitCodeFor(ResumeCheckpointBad(absl::NotFoundError("manifest"))), kRankExitResumeCheckpointBad);
  EXPECT_EQ(RankExitCodeFor(ResumeCheckpointBad(absl::UnavailableError("EIO"))), kRankExitTransient);
  EXPECT_EQ(ClassifyRankExit(kRankExitResumeCheckpointBad, "x").cause, "checkpoint_bad");
}

// The first retry at once; then waits double from initial_backoff up to max_backoff, each drawn
// from [w/2, w].
TEST(Failures, BackoffGrowsExponentiallyWithJitterUpToItsMaximum) {
  RetrySettings s;
  s.max_retries = 100;
  s.window_ms = 1'000'000'000;
  s.initial_backoff_s = 1;
  s.max_backoff_s = 10;
  std::vector<int64_t> times;
  std::vector<int64_t> top, bottom;
  for (int i = 0; i < 7; ++i) top.push_back(DecideRetry(s, 1000 * i, 1.0, &times).wait_ms);
  times.clear();
  for (int i = 0; i < 7; ++i) bottom.push_back(DecideRetry(s, 1000 * i, 0.0, &times).wait_ms);
  EXPECT_EQ(top, (std::vector<int64_t>{0, 1000, 2000, 4000, 8000, 10000, 10000}));
  EXPECT_EQ(bottom, (std::vector<int64_t>{0, 500, 1000, 2000, 4000, 5000, 5000}));
}

TEST(Failures, FaultsOutsideTheWindowDoNotCount) {
  RetrySettings s;
  s.max_retries = 2;
  s.window_ms = 60'000;
  std::vector<int64_t> times;
  EXPECT_TRUE(DecideRetry(s, 0, 0.5, &times).retry);
  EXPECT_TRUE(DecideRetry(s, 10'000, 0.5, &times).retry);
  const RetryDecision third = DecideRetry(s, 20'000, 0.5, &times);
  EXPECT_FALSE(third.retry);
  EXPECT_EQ(third.why_not, "3 cluster faults within 1m, and the plan's retry.max_retries is 2");
  EXPECT_TRUE(DecideRetry(s, 60'001, 0.5, &times).retry);  // the fault at 0 has left the window
  EXPECT_EQ(times, (std::vector<int64_t>{10'000, 60'001}));
}

}  // namespace
}  // namespace loom::coordinator
