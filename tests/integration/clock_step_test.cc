// The wall clock steps under a running cluster (NTP correcting a drift, an operator's `date -s`, a
// VM resumed) and nothing is declared lost: Loom's deadlines run on common/clock.h, which follows
// CLOCK_MONOTONIC. Before, a step forward larger than the heartbeat timeout marked every worker
// lost at once, and a step back made their heartbeats look fresh for as long as the step.
//
// This moves the clock of the whole machine (root only: CAP_SYS_TIME), so CTest runs it alone
// (RUN_SERIAL) and it puts the clock back where it would have been, also when an assertion fails.
#include <time.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

timespec Now(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return ts;
}

int64_t Nanos(const timespec& ts) { return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec; }

// Steps CLOCK_REALTIME; on destruction sets it to (wall at construction + monotonic time since).
class WallClockSteps {
 public:
  WallClockSteps() : wall_(Nanos(Now(CLOCK_REALTIME))), monotonic_(Nanos(Now(CLOCK_MONOTONIC))) {}
  ~WallClockSteps() { Set(wall_ + Nanos(Now(CLOCK_MONOTONIC)) - monotonic_); }
  WallClockSteps(const WallClockSteps&) = delete;
  WallClockSteps& operator=(const WallClockSteps&) = delete;

  // Moves the wall clock by `seconds` from where it is now; false without the permission.
  bool Step(int seconds) { return Set(Nanos(Now(CLOCK_REALTIME)) + int64_t{seconds} * 1'000'000'000); }

 private:
  static bool Set(int64_t nanos) {
    const timespec ts{static_cast<time_t>(nanos / 1'000'000'000), static_cast<long>(nanos % 1'000'000'000)};
    return clock_settime(CLOCK_REALTIME, &ts) == 0;
  }
  const int64_t wall_;
  const int64_t monotonic_;
};

TEST(WallClock, StepsForwardAndBackMarkNoWorkerLostAndCostNoAttempt) {
  {
    WallClockSteps probe;
    if (!probe.Step(0)) GTEST_SKIP() << "cannot set the clock (" << std::strerror(errno) << "): needs root";
  }
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=300"}});  // heartbeat timeout 2 s
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(SourcePath("tests/integration/two_stage_plan.yaml"));
  cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).progress().step() >= 2; });
  {
    WallClockSteps clock;
    ASSERT_TRUE(clock.Step(+8));  // four heartbeat timeouts ahead
    std::this_thread::sleep_for(std::chrono::seconds(4));
    ASSERT_TRUE(clock.Step(-16));  // and eight behind
    std::this_thread::sleep_for(std::chrono::seconds(4));
  }
  const PlanStatus s = cluster.WaitForPlan(id, [](const PlanStatus& p) { return p.state() != loom::v1::PLAN_STATE_ACTIVE; },
                                           std::chrono::seconds(60));
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).attempt(), 1) << cluster.Logs();
  EXPECT_EQ(cluster.coordinator()->log().find("lost"), std::string::npos) << cluster.Logs();
}

}  // namespace
}  // namespace loom::testing
