// Per-rank step timings and straggler detection with real processes: a coordinator, a worker
// daemon and three data-parallel loom-rank processes training on prepared shards. One rank slowed
// by the test hook (LOOM_TEST_SLOW_RANK=2:MS: it sleeps MS extra inside its compute every step) is
// flagged as a straggler in the job's status, in `loom status`, in loom_rank_straggler and in the
// coordinator's log, and the others are not; the flag's series is gone once the job ends. The
// same plan without the hook flags nobody.
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// `promtool check metrics` on `text`: its exit code and output (empty when clean).
std::pair<int, std::string> Promtool(const Cluster& cluster, const std::string& text) {
  const std::string in = cluster.dir() + "/metrics.txt", out = cluster.dir() + "/promtool.out";
  std::ofstream(in) << text;
  const int status = std::system(("promtool check metrics < " + in + " > " + out + " 2>&1").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadAll(out)};
}

// One pretrain stage of 40 steps of 384 tokens (64 x micro-batch 2 x dp 3) on a tiny model.
std::string WritePlan(const std::string& path) {
  std::ofstream(path) << R"(name: slow
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: core
    kind: pretrain
    tokens: 15360
    parallel: {dp: 3, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 384}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 20, keep_last: 1}
)";
  return path;
}

TEST(Stragglers, ASlowedRankIsFlaggedInStatusMetricAndLogAndNoOtherIs) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"),
                   .worker_env = {"LOOM_TEST_SLOW_RANK=2:150"},
                   .prepared_data = PreparedData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 3);
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  const PlanStatus s = cluster.WaitForPlan(
      id, [](const PlanStatus& s) { return Ended(s) || s.jobs(0).stragglers_size() > 0; }, std::chrono::seconds(90));
  ASSERT_EQ(s.jobs(0).stragglers_size(), 1) << s.jobs(0).DebugString() << cluster.Logs();
  const loom::v1::Straggler& flagged = s.jobs(0).stragglers(0);
  EXPECT_EQ(flagged.rank(), 2);
  EXPECT_EQ(flagged.worker_id(), "w1");
  EXPECT_EQ(flagged.window_steps(), 20);
  EXPECT_GE(flagged.compute_seconds(), 0.15) << flagged.DebugString();
  EXPECT_GE(flagged.compute_seconds(), 1.3 * flagged.peers_compute_seconds()) << flagged.DebugString();

  const CommandResult status = cluster.Loom({"status", id});
  EXPECT_NE(status.out.find("STRAGGLERS: rank 2 on w1"), std::string::npos) << status.out;

  // The coordinator refreshes /metrics every 0.5 s.
  std::string c;
  for (int i = 0; i < 30 && std::isnan(MetricValue(c, "loom_rank_straggler")); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  }
  EXPECT_EQ(MetricValue(c, "loom_rank_straggler", R"(plan=")" + id + R"(",rank="2",stage="core")"), 1) << c;
  EXPECT_TRUE(std::isnan(MetricValue(c, "loom_rank_straggler", R"(rank="0")"))) << c;
  EXPECT_TRUE(std::isnan(MetricValue(c, "loom_rank_straggler", R"(rank="1")"))) << c;

  // The worker's per-rank timings: rank 2 computes for the extra 150 ms; its peers wait for it in
  // the gradient all-reduce.
  const std::string w = HttpGet(cluster.worker_metrics("w1"), "/metrics");
  EXPECT_GE(MetricValue(w, "loom_rank_step_compute_seconds", R"(rank="2")"), 0.15) << w;
  EXPECT_LT(MetricValue(w, "loom_rank_step_compute_seconds", R"(rank="0")"), 0.15) << w;
  EXPECT_GE(MetricValue(w, "loom_rank_step_communication_wait_seconds", R"(rank="0")"), 0.05) << w;
  EXPECT_GE(MetricValue(w, "loom_rank_step_data_wait_seconds", R"(rank="1")"), 0) << w;
  EXPECT_GE(MetricValue(w, "loom_train_step_duration_seconds_count", R"(stage="core")"), 20) << w;
  EXPECT_GE(MetricValue(w, "loom_train_step_duration_seconds_bucket", R"(le="+Inf")"), 20) << w;
  // Both outputs, with the real ranks' series, pass Prometheus's own lint without a remark.
  for (const std::string& text : {c, w}) {
    const auto [rc, lint] = Promtool(cluster, text);
    EXPECT_EQ(rc, 0) << lint;
    EXPECT_EQ(lint, "") << lint;
  }

  const PlanStatus done = cluster.WaitForPlan(id, Ended, std::chrono::seconds(90));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(done.jobs(0).stragglers_size(), 0) << "the attempt ended";
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  EXPECT_TRUE(std::isnan(MetricValue(c, "loom_rank_straggler"))) << c;
  const std::string log = ReadAll(cluster.dir() + "/coordinator.log");
  EXPECT_NE(log.find("rank 2 on worker w1 is a straggler"), std::string::npos) << log;
  EXPECT_EQ(log.find("rank 0 on worker w1 is a straggler"), std::string::npos) << log;
  EXPECT_EQ(log.find("rank 1 on worker w1 is a straggler"), std::string::npos) << log;
}

TEST(Stragglers, EvenRanksFlagNobody) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = PreparedData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 3);
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  std::set<int> ever;
  const PlanStatus done = cluster.WaitForPlan(
      id,
      [&](const PlanStatus& s) {
        for (const auto& r : s.jobs(0).stragglers()) ever.insert(r.rank());
        return Ended(s);
      },
      std::chrono::seconds(90));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(done.jobs(0).progress().step(), 40);
  EXPECT_TRUE(ever.empty()) << "flagged rank " << *ever.begin();
  const std::string log = ReadAll(cluster.dir() + "/coordinator.log");
  EXPECT_EQ(log.find("is a straggler"), std::string::npos) << log;
}

}  // namespace
}  // namespace loom::testing
