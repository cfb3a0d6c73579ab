// Real training through the whole path: `loom submit` → coordinator → worker daemons → loom-rank
// (the engine on prepared token shards) → committed checkpoints. A worker killed mid-stage is
// recovered from the last committed checkpoint and the per-step losses after the resume point
// equal those of an uninterrupted run of the same plan, bit for bit; a dp=2 stage meets through
// the coordinator's rendezvous store and trains as dp=1 does.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

std::string RankBinary() { return BinaryPath("worker/loom-rank"); }

// Three stages: core (120 steps of 512 tokens, a mix change at 16Ki, checkpoints every 5 steps)
// `more`, continued pre-training from core's final checkpoint, and `avg`, the mean of core's last
// three checkpoints, and `chat`, SFT from that average.
std::string WritePlan(const Cluster& cluster, int dp, const std::string& name = "real") {
  const std::string path = cluster.dir() + "/" + name + ".yaml";
  std::ofstream(path) << "name: " << name << R"(
seed: 3
model: {layers: 4, d_model: 128, heads: 4, kv_heads: 2, ffn_size: 256, vocab_size: 512}
data: {dir: )" << PreparedData()
                      << R"(}
defaults:
  parallel: {dp: )" << dp
                      << R"(, micro_batch_size: 2}
  optimizer: {lr: 3e-3}
  lr_schedule: {type: cosine, warmup_tokens: 4Ki}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: 5, keep_last: 0}
stages:
  - name: core
    kind: pretrain
    tokens: 60Ki
    data_mix:
      - {at_tokens: 0, weights: {math: 0.7, code: 0.3}}
      - {at_tokens: 16Ki, weights: {math: 0.2, code: 0.8}}
    eval: {every_steps: 60, sets: [math, code], max_tokens: 1Ki}
  - name: more
    kind: continued_pretrain
    from: core
    tokens: 8Ki
    data_mix: [{at_tokens: 0, weights: {code: 1}}]
  - name: avg
    kind: average
    from: core
    average: {last_k: 3}
  - name: chat
    kind: sft
    from: avg
    tokens: 4Ki
    dataset: {source: sft_math}
    optimizer: {lr: 1e-3}
    parallel: {micro_batch_size: 2}
    seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
    sft: {template: chatml, packing: true}
)";
  return path;
}

// step -> the exact loss text printed by loom-rank in its rank.log.
std::map<int64_t, std::string> RankLosses(const std::string& rank_log) {
  std::map<int64_t, std::string> out;
  std::ifstream in(rank_log);
  const std::regex line_re(R"(^step (\d+) tokens \d+ loss (\S+) )");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, line_re)) out[std::stoll(m[1])] = m[2];
  }
  return out;
}

std::string RankLog(const Cluster& cluster, const std::string& worker, const std::string& plan_id,
                    const std::string& stage, int attempt, int rank = 0) {
  return cluster.work_dir(worker) + "/" + plan_id + "/" + stage + "#" + std::to_string(attempt) + "/rank" +
         std::to_string(rank) + "/rank.log";
}

TEST(TrainingCluster, KilledWorkerResumesAndReproducesTheUninterruptedLossesBitwise) {
  Cluster cluster({.rank_binary = RankBinary()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string plan = WritePlan(cluster, 1);

  // Uninterrupted.
  const std::string first = cluster.Submit(plan);
  PlanStatus done = cluster.WaitForPlan(first, Ended, std::chrono::seconds(120));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  ASSERT_EQ(done.jobs_size(), 4);
  const auto& core = done.jobs(0);
  const auto& more = done.jobs(1);
  EXPECT_TRUE(core.final_checkpoint().final());
  EXPECT_EQ(core.final_checkpoint().step(), 120);
  EXPECT_EQ(more.inputs().at("from"), core.final_checkpoint().path()) << more.DebugString();
  // The average of core's last three checkpoints (steps 110, 115, 120) is a committed checkpoint.
  const auto& avg = done.jobs(2);
  EXPECT_EQ(avg.inputs().at("last_k[2]"), core.final_checkpoint().path()) << avg.DebugString();
  EXPECT_NE(avg.inputs().at("last_k[0]").find("step-000110"), std::string::npos) << avg.DebugString();
  ASSERT_TRUE(ReadCheckpointManifest(avg.final_checkpoint().path()).ok()) << avg.DebugString();
  // SFT on the averaged model: chat data through the template, assistant-only loss.
  const auto& chat = done.jobs(3);
  EXPECT_EQ(chat.inputs().at("from"), avg.final_checkpoint().path());
  EXPECT_EQ(chat.progress().tokens(), 4096) << chat.DebugString();
  EXPECT_GT(chat.progress().loss(), 0.0);
  // Held-out losses reach `status --json` and the worker's /metrics, with the per-source counters.
  EXPECT_TRUE(core.eval_loss().contains("math")) << core.DebugString();
  EXPECT_TRUE(core.eval_loss().contains("code")) << core.DebugString();
  const std::string metrics = HttpGet(cluster.worker_metrics(core.rank_workers(0)), "/metrics");
  EXPECT_GT(MetricValue(metrics, "loom_data_tokens_total", "source=\"math\""), 0) << metrics;
  EXPECT_GT(MetricValue(metrics, "loom_data_tokens_total", "source=\"code\""), 0) << metrics;
  EXPECT_GT(MetricValue(metrics, "loom_eval_loss", "source=\"math\""), 0.5) << metrics;
  const std::map<int64_t, std::string> uninterrupted =
      RankLosses(RankLog(cluster, core.rank_workers(0), first, "core", 1));
  ASSERT_EQ(uninterrupted.size(), 120u) << ReadAll(RankLog(cluster, core.rank_workers(0), first, "core", 1));
  EXPECT_LT(std::stod(uninterrupted.at(120)), std::stod(uninterrupted.at(1)) - 1.0)
      << "the model did not learn";

  // The same plan again; its rank's worker is killed once a checkpoint past step 10 is committed.
  const std::string second = cluster.Submit(plan);
  const PlanStatus running = cluster.WaitForPlan(second, [](const PlanStatus& s) {
    return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).last_checkpoint().step() >= 10;
  });
  ASSERT_EQ(running.jobs(0).rank_workers_size(), 1);
  const std::string victim = running.jobs(0).rank_workers(0);
  ASSERT_LT(running.jobs(0).last_checkpoint().step(), 110) << "the stage ran too fast to be interrupted";
  cluster.KillWorker(victim);
  done = cluster.WaitForPlan(second, Ended, std::chrono::seconds(120));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& recovered = done.jobs(0);
  EXPECT_EQ(recovered.attempt(), 2);
  ASSERT_FALSE(recovered.resumed_from().empty());
  absl::StatusOr<loom::v1::CheckpointManifest> resumed = ReadCheckpointManifest(recovered.resumed_from());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  const std::string survivor = victim == "w1" ? "w2" : "w1";
  const std::map<int64_t, std::string> after = RankLosses(RankLog(cluster, survivor, second, "core", 2));
  ASSERT_FALSE(after.empty()) << cluster.Logs();
  EXPECT_EQ(after.begin()->first, resumed->step() + 1);
  EXPECT_EQ(after.rbegin()->first, 120);
  for (const auto& [step, loss] : after) EXPECT_EQ(loss, uninterrupted.at(step)) << "step " << step;
}

TEST(TrainingCluster, DataParallelStageMeetsThroughTheCoordinatorAndMatchesOneRank) {
  Cluster cluster({.rank_binary = RankBinary()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string one = cluster.Submit(WritePlan(cluster, 1, "one"));
  PlanStatus a = cluster.WaitForPlan(one, Ended, std::chrono::seconds(120));
  ASSERT_EQ(a.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const std::string two = cluster.Submit(WritePlan(cluster, 2, "two"));
  PlanStatus b = cluster.WaitForPlan(two, Ended, std::chrono::seconds(120));
  ASSERT_EQ(b.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  ASSERT_EQ(b.jobs(0).rank_workers_size(), 2);
  EXPECT_NE(b.jobs(0).rank_workers(0), b.jobs(0).rank_workers(1)) << "dp=2 should span both workers";
  const auto dp1 = RankLosses(RankLog(cluster, a.jobs(0).rank_workers(0), one, "core", 1));
  const auto dp2 = RankLosses(RankLog(cluster, b.jobs(0).rank_workers(0), two, "core", 1));
  ASSERT_EQ(dp1.size(), 120u);
  ASSERT_EQ(dp2.size(), 120u);
  // Summation order differs (each rank sums its half, then the all-reduce), so the runs drift
  // apart slowly: the first 20 steps agree to 1e-4 (issue 6's bound), all 120 to 1e-2.
  for (const auto& [step, loss] : dp1) {
    const double x = std::stod(loss), y = std::stod(dp2.at(step));
    EXPECT_NEAR(y, x, (step <= 20 ? 1e-4 : 1e-2) * std::abs(x)) << "step " << step;
  }
  EXPECT_TRUE(b.jobs(1).final_checkpoint().final());
}

}  // namespace
}  // namespace loom::testing
