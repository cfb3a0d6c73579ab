// A checkpoint's life with real processes (coordinator, worker daemon, loom-rank on prepared
// shards): each attempt writes under a directory of its own; a save that fails (a full disk) costs
// that checkpoint only, is reported and counted, and training goes on; the final save is retried;
// retention is the coordinator's, which deletes a checkpoint only once newer ones are committed and
// never lists one it deleted; when the job ends, whatever no committed checkpoint needs is swept.
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "google/protobuf/util/json_util.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// One pretrain stage of 20 steps of 512 tokens on two data-parallel ranks (a writer and a peer
// that waits for it), a checkpoint every 5 steps, the newest 2 kept.
std::string WritePlan(const std::string& path) {
  std::ofstream(path) << R"(name: life
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: core
    kind: pretrain
    tokens: 10Ki
    parallel: {dp: 2, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 5, keep_last: 2}
)";
  return path;
}

double WaitForMetric(const Cluster& cluster, const std::string& name, double want) {
  double value = -1;
  for (int i = 0; i < 50 && value != want; ++i) {
    value = MetricValue(HttpGet(cluster.coordinator_metrics(), "/metrics"), name);
    if (value != want) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return value;
}

std::set<std::string> Entries(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.insert(e.path().filename().string());
  return out;
}

// The save at step 10 fails (its only try: not the final one), the final save at step 20 fails its
// first try and succeeds on the next: the job succeeds in its first attempt, step 10 is never
// committed, the failure is in the status, the log and a metric, and retention deleted step 5 once
// 15 and 20 were committed.
TEST(CheckpointLifecycle, AFailedSaveCostsThatCheckpointOnlyAndTrainingGoesOn) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"),
                   .worker_env = {"LOOM_TEST_FAIL_SAVES=10,20"},
                   .prepared_data = PreparedData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const loom::v1::JobStatus& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 1) << core.DebugString();
  EXPECT_EQ(core.progress().step(), 20);
  EXPECT_EQ(core.checkpoint_save_failures(), 1) << core.DebugString();
  EXPECT_NE(core.last_checkpoint_save_error().find("step 10: No space left on device"), std::string::npos)
      << core.last_checkpoint_save_error();
  EXPECT_EQ(core.final_checkpoint().path(), cluster.checkpoint_root() + "/life-1/core/attempt-1/step-000020");
  const CommandResult final_path = cluster.Loom({"checkpoints", id, "--stage", "core", "--final"});
  EXPECT_EQ(final_path.out, core.final_checkpoint().path() + "\n") << final_path.err;
  EXPECT_EQ(cluster.Loom({"checkpoints", id, "--final"}).exit_code, 2);  // --final needs --stage
  const CommandResult status = cluster.Loom({"status", id});
  EXPECT_NE(status.out.find("1 checkpoint save(s) failed, last at step 10: No space left on device"),
            std::string::npos)
      << status.out;

  // Listed: 15 and 20 (keep_last 2); 5 was deleted by retention, 10 never committed.
  const CommandResult listed = cluster.Loom({"checkpoints", id, "--json"});
  loom::v1::ListCheckpointsResponse list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(listed.out, &list).ok()) << listed.out;
  std::set<int64_t> steps;
  for (const auto& c : list.checkpoints()) {
    steps.insert(c.step());
    EXPECT_TRUE(std::filesystem::exists(c.path() + "/manifest.json")) << "listed but gone: " << c.path();
  }
  EXPECT_EQ(steps, (std::set<int64_t>{15, 20}));
  // On disk: exactly what is listed (the sweep at the job's end left no partial save behind).
  EXPECT_EQ(Entries(cluster.checkpoint_root() + "/life-1/core"), (std::set<std::string>{"attempt-1"}));
  EXPECT_EQ(Entries(cluster.checkpoint_root() + "/life-1/core/attempt-1"),
            (std::set<std::string>{"step-000015", "step-000020"}));
  EXPECT_EQ(WaitForMetric(cluster, "loom_checkpoint_save_failures_total", 1), 1);
  EXPECT_EQ(WaitForMetric(cluster, "loom_checkpoints_deleted_total", 1), 1);
  EXPECT_NE(cluster.Logs().find("checkpoint step 10 was not saved by rank 0"), std::string::npos);
}

}  // namespace
}  // namespace loom::testing
