// The goodput ledger (coordinator/goodput.h) on scripted timelines: every second in one bucket,
// step time productive only once a checkpoint covers it, wasted when the attempt fails first.
#include "coordinator/goodput.h"

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

double Bucket(const loom::v1::Goodput& g, const char* name) { return g.seconds().at(name); }

double Sum(const loom::v1::Goodput& g) {
  double s = g.uncommitted_seconds();
  for (const auto& [name, v] : g.seconds()) s += v;
  return s;
}

// Rank 0's cumulative phase times.
loom::v1::RankTime Times(double rendezvous, double load, double data, double compute, double communication,
                         double save = 0, double evaluation = 0) {
  loom::v1::RankTime t;
  t.set_rendezvous_seconds(rendezvous);
  t.set_load_seconds(load);
  t.set_data_wait_seconds(data);
  t.set_compute_seconds(compute);
  t.set_communication_seconds(communication);
  t.set_checkpoint_save_seconds(save);
  t.set_evaluation_seconds(evaluation);
  return t;
}

TEST(Goodput, AnUndisturbedJobIsQueuedPlacedLoadedAndProductive) {
  GoodputLedger ledger(1'000);
  ledger.Placed(3'000, 2);  // 2 s queued
  // The first report, 10 s after placement: 1 s rendezvous, 2 s load, step 1 took 0.5 + 4 + 0.5.
  ledger.Progress(13'000, 1, Times(1, 2, 0.5, 4, 0.5));
  // Step 2: 5 s of step, 1 s of save, 0.5 s the rank did not account for.
  ledger.Progress(19'500, 2, Times(1, 2, 1, 8, 1, 1));
  loom::v1::Goodput g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "queued"), 2);
  EXPECT_DOUBLE_EQ(Bucket(g, "placement_and_rendezvous"), 10 - 8 + 1);  // 2 s unaccounted + 1 s rendezvous
  EXPECT_DOUBLE_EQ(Bucket(g, "startup_and_load"), 2);
  EXPECT_DOUBLE_EQ(Bucket(g, "checkpoint_save"), 1);
  EXPECT_DOUBLE_EQ(Bucket(g, "other"), 0.5);
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 0);  // nothing committed yet
  EXPECT_DOUBLE_EQ(g.uncommitted_seconds(), 10);
  ledger.Committed(1);
  g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 4);
  EXPECT_DOUBLE_EQ(Bucket(g, "data_wait"), 0.5);
  EXPECT_DOUBLE_EQ(Bucket(g, "communication"), 0.5);
  EXPECT_DOUBLE_EQ(g.uncommitted_seconds(), 5);
  ledger.Ended(21'500, true, 1.5);  // the final save, then 0.5 s until every rank exited
  g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 8);
  EXPECT_DOUBLE_EQ(Bucket(g, "checkpoint_save"), 2.5);
  EXPECT_DOUBLE_EQ(Bucket(g, "other"), 1);
  EXPECT_DOUBLE_EQ(g.uncommitted_seconds(), 0);
  EXPECT_DOUBLE_EQ(Sum(g), 20.5);
  EXPECT_DOUBLE_EQ(g.wall_seconds(), 20.5);
  EXPECT_DOUBLE_EQ(g.ratio(), 8 / 20.5);
  EXPECT_EQ(g.accounted_ms(), 21'500);
}

TEST(Goodput, AFailureWastesTheUncommittedStepsAndSplitsDetectionFromRecovery) {
  GoodputLedger ledger(0);
  ledger.Placed(0, 2);
  ledger.Progress(5'000, 1, Times(0, 1, 0, 4, 0));
  ledger.Committed(1);
  ledger.Progress(9'000, 2, Times(0, 1, 0, 8, 0));
  ledger.Progress(13'000, 3, Times(0, 1, 0, 12, 0));
  // The worker's last heartbeat was at 14 s; the coordinator noticed at 20 s.
  ledger.Failed(20'000, 14'000);
  loom::v1::Goodput g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 4);
  EXPECT_DOUBLE_EQ(Bucket(g, "wasted_progress"), 8 + 1);  // steps 2 and 3, and the step in flight
  EXPECT_DOUBLE_EQ(Bucket(g, "failure_detection"), 6);
  // Recovery: from detection to the next attempt's first step (its placement, rendezvous, load).
  ledger.Placed(22'000, 2);
  ledger.Progress(30'000, 2, Times(1, 2, 0, 4, 0));
  g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "recovery"), 2 + 4);  // 2 s before placement, 4 s of its 8 before the step
  EXPECT_DOUBLE_EQ(Bucket(g, "placement_and_rendezvous"), 0);  // the second attempt's went to recovery
  EXPECT_DOUBLE_EQ(g.uncommitted_seconds(), 4);
  ledger.Ended(31'000, true, 0);
  g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 8);
  EXPECT_DOUBLE_EQ(Sum(g), 31);
}

TEST(Goodput, ARecoveryOntoAnotherLayoutIsAnElasticReshape) {
  GoodputLedger ledger(0);
  ledger.Placed(0, 2);
  ledger.Progress(2'000, 1, Times(0, 0, 0, 2, 0));
  ledger.Failed(3'000, 3'000);
  ledger.Placed(4'000, 1);  // one rank fewer
  ledger.Progress(7'000, 1, Times(0, 0, 0, 1, 0));
  const loom::v1::Goodput g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "recovery"), 1);
  EXPECT_DOUBLE_EQ(Bucket(g, "elastic_reshape"), 2);
  EXPECT_DOUBLE_EQ(Bucket(g, "wasted_progress"), 3);
  EXPECT_DOUBLE_EQ(Sum(g), 7);
}

TEST(Goodput, ReportsThatOverstateTheWallTimeAreScaledToIt) {
  GoodputLedger ledger(0);
  ledger.Placed(0, 2);
  ledger.Progress(1'000, 1, Times(0, 0, 0, 1.5, 0.5));  // 2 s of phases in 1 s of wall time
  ledger.Ended(1'000, true, 0);
  const loom::v1::Goodput g = ledger.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 0.75);
  EXPECT_DOUBLE_EQ(Bucket(g, "communication"), 0.25);
  EXPECT_DOUBLE_EQ(Sum(g), 1);
}

TEST(Goodput, TheLiveViewChargesTheOpenIntervalAndCountersNeverShrink) {
  GoodputLedger ledger(0);
  EXPECT_DOUBLE_EQ(Bucket(ledger.Snapshot(5'000), "queued"), 5);
  ledger.Placed(5'000, 2);
  ledger.Progress(8'000, 1, Times(0, 0, 0, 1, 0));
  loom::v1::Goodput live = ledger.Snapshot(10'000);
  EXPECT_DOUBLE_EQ(live.uncommitted_seconds(), 1 + 2);  // the step in flight is step time
  EXPECT_DOUBLE_EQ(live.wall_seconds(), 10);
  EXPECT_EQ(live.accounted_ms(), 10'000);
  // Every closed bucket only grows through a failure, a recovery and the end.
  loom::v1::Goodput before = ledger.Closed();
  ledger.Failed(12'000, 11'000);
  ledger.Placed(13'000, 2);
  ledger.Progress(15'000, 1, Times(0, 0, 0, 1, 0));
  ledger.Ended(16'000, false, 0);
  const loom::v1::Goodput after = ledger.Closed();
  for (const auto& [name, v] : before.seconds()) EXPECT_GE(after.seconds().at(name), v) << name;
  EXPECT_DOUBLE_EQ(Sum(after), 16);
  EXPECT_DOUBLE_EQ(Bucket(after, "productive"), 0);  // it failed: nothing was ever committed
}

TEST(Goodput, ARestoredLedgerKeepsItsTotalsAndRebasesOnTheNextReport) {
  GoodputLedger ledger(0);
  ledger.Placed(0, 2);
  ledger.Progress(4'000, 1, Times(0, 1, 0, 3, 0));
  const loom::v1::Goodput saved = ledger.Closed();
  // The coordinator restarted; the attempt goes on. The rank's counters include time already
  // accounted, so its next report only sets the baseline.
  GoodputLedger restored = GoodputLedger::Restore(saved, loom::v1::JOB_STATE_RUNNING);
  restored.Progress(9'000, 2, Times(0, 1, 0, 8, 0));
  restored.Progress(12'000, 3, Times(0, 1, 0, 11, 0));
  restored.Ended(12'000, true, 0);
  const loom::v1::Goodput g = restored.Closed();
  EXPECT_DOUBLE_EQ(Bucket(g, "productive"), 3 + 3);
  EXPECT_DOUBLE_EQ(Bucket(g, "other"), 5);  // the restart's gap
  EXPECT_DOUBLE_EQ(Sum(g), 12);
}

}  // namespace
}  // namespace loom::coordinator
