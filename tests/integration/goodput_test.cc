// The goodput ledger with real processes (coordinator, two workers, loom-rank on prepared shards):
// a worker killed mid-stage costs wasted progress (the steps since the last committed checkpoint),
// failure detection (its last heartbeat to the coordinator noticing) and recovery (to the next
// attempt's first step); every second of the job's wall time is in exactly one bucket; `loom
// status` and /metrics show it.
#include <signal.h>

#include <cmath>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// 400 steps of 512 tokens on two data-parallel ranks, a checkpoint every 50.
std::string WritePlan(const std::string& path) {
  std::ofstream(path) << R"(name: ledger
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: core
    kind: pretrain
    tokens: 200Ki
    parallel: {dp: 2, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 50, keep_last: 2}
)";
  return path;
}

double Bucket(const loom::v1::JobStatus& job, const std::string& bucket) {
  auto it = job.goodput().seconds().find(bucket);
  return it == job.goodput().seconds().end() ? -1 : it->second;
}

TEST(Goodput, AWorkerKilledMidStageCostsWastedProgressDetectionAndRecoveryAndEverySecondIsAccounted) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = PreparedData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  // Between checkpoints, after the first one committed.
  const PlanStatus running = cluster.WaitForPlan(
      id,
      [](const PlanStatus& s) {
        const loom::v1::JobStatus& j = s.jobs(0);
        return Ended(s) || (j.last_checkpoint().step() >= 50 && j.progress().step() >= j.last_checkpoint().step() + 5);
      },
      std::chrono::seconds(120));
  ASSERT_EQ(running.jobs(0).state(), loom::v1::JOB_STATE_RUNNING) << cluster.Logs();
  // While it runs, the live ledger already accounts every second since the submission.
  const loom::v1::Goodput& live = running.jobs(0).goodput();
  EXPECT_GT(live.wall_seconds(), 0) << running.jobs(0).DebugString();
  EXPECT_GT(live.seconds().at("productive"), 0) << live.DebugString();
  EXPECT_GT(live.seconds().at("startup_and_load") + live.seconds().at("placement_and_rendezvous"), 0)
      << live.DebugString();
  cluster.KillWorker("w2", SIGKILL);
  cluster.StartWorker("w2", 1);  // a replacement, so the job resumes on two ranks again

  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(240));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const loom::v1::JobStatus& core = s.jobs(0);
  ASSERT_EQ(core.attempt(), 2) << core.DebugString();
  EXPECT_EQ(core.last_failure().cause(), "worker_lost");
  const loom::v1::Goodput& g = core.goodput();
  EXPECT_GT(Bucket(core, "productive"), 0) << g.DebugString();
  EXPECT_GT(Bucket(core, "wasted_progress"), 0) << g.DebugString();
  EXPECT_GT(Bucket(core, "failure_detection"), 0) << g.DebugString();
  EXPECT_GT(Bucket(core, "recovery"), 0) << g.DebugString();
  EXPECT_EQ(g.uncommitted_seconds(), 0) << g.DebugString();  // the final checkpoint covers every step
  // Detection: the worker's last heartbeat to the 2 s timeout's expiry, give or take a scan.
  EXPECT_LE(Bucket(core, "failure_detection"), 4) << g.DebugString();
  // Every second of the job's wall time (its plan's submission to its end) in exactly one bucket.
  double sum = 0;
  for (const auto& [bucket, seconds] : g.seconds()) sum += seconds;
  const double wall = (s.ended_ms() - s.submitted_ms()) / 1000.0;
  EXPECT_NEAR(sum, wall, 1.0) << g.DebugString();
  EXPECT_NEAR(g.wall_seconds(), sum, 1e-9);
  EXPECT_NEAR(g.ratio(), Bucket(core, "productive") / g.wall_seconds(), 1e-9);

  const CommandResult status = cluster.Loom({"status", id});
  std::printf("%s\n%s\n", status.out.c_str(), g.DebugString().c_str());
  EXPECT_NE(status.out.find("goodput "), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("largest losses: "), std::string::npos) << status.out;

  const std::string metrics = HttpGet(cluster.coordinator_metrics(), "/metrics");
  EXPECT_GT(MetricValue(metrics, "loom_goodput_seconds_total", R"(bucket="wasted_progress")"), 0) << metrics;
  EXPECT_GT(MetricValue(metrics, "loom_goodput_seconds_total", R"(bucket="productive")"), 0) << metrics;
  const double ratio = MetricValue(metrics, "loom_goodput_ratio", R"(plan=")" + id + "\"");
  EXPECT_GT(ratio, 0) << metrics;
  EXPECT_LT(ratio, 1) << metrics;
}

}  // namespace
}  // namespace loom::testing
