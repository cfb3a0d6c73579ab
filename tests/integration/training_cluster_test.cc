// Real training through the whole path: `loom submit` → coordinator → worker daemons → loom-rank
// (the engine on prepared token shards) → committed checkpoints. A worker killed mid-stage is
// recovered from the last committed checkpoint and the per-step losses after the resume point
// equal those of an uninterrupted run of the same plan, bit for bit; a dp=2 stage meets through
// the coordinator's rendezvous store and trains as dp=1 does.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <tuple>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "data/shard.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

std::string RankBinary() { return BinaryPath("worker/loom-rank"); }



// Three stages: core (120 steps of 512 tokens, a mix change at 16Ki, checkpoints every 5 steps)
// `more`, continued pre-training from core's final checkpoint, and `avg`, the mean of core's last
// three checkpoints, `chat`, SFT from that average, and `measure`, an eval stage of the SFT model.
std::string WritePlan(const Cluster& cluster, int dp, const std::string& name = "real", int tp = 1, int pp = 1,
                      bool elastic = false) {
  const std::string path = cluster.dir() + "/" + name + ".yaml";
  std::ofstream(path) << "name: " << name << R"(
seed: 3
model: {layers: 4, d_model: 128, heads: 4, kv_heads: 2, ffn_size: 256, vocab_size: 512}
data: {dir: )" << PreparedData()
                      << R"(}
defaults:
  parallel: {dp: )" << dp << ", tp: " << tp << ", pp: " << pp << ", elastic: " << (elastic ? "true" : "false")
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
  - name: measure
    kind: eval
    from: chat
    eval: {sets: [math], max_tokens: 1Ki, seq_len: 64, math_accuracy: true, math_problems: 4}
)";
  return path;
}

// "<step> <set>" -> held-out loss, from the "eval step N SET loss X" lines of a rank.log.
std::map<std::string, double> RankEvalLosses(const std::string& rank_log) {
  std::map<std::string, double> out;
  std::ifstream in(rank_log);
  const std::regex line_re(R"(^eval step (\d+) (\S+) loss (\S+))");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, line_re)) out[std::string(m[1]) + " " + std::string(m[2])] = std::stod(m[3]);
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
  ASSERT_EQ(done.jobs_size(), 5);
  const auto& core = done.jobs(0);
  const auto& more = done.jobs(1);
  EXPECT_TRUE(core.final_checkpoint().final());
  EXPECT_EQ(core.final_checkpoint().step(), 120);
  EXPECT_EQ(more.inputs().from(), core.final_checkpoint().path()) << more.DebugString();
  // The average of core's last three checkpoints (steps 110, 115, 120) is a committed checkpoint.
  const auto& avg = done.jobs(2);
  ASSERT_GE(avg.inputs().checkpoints_size(), 3) << avg.DebugString();
  EXPECT_EQ(avg.inputs().checkpoints(2), core.final_checkpoint().path()) << avg.DebugString();
  EXPECT_NE(avg.inputs().checkpoints(0).find("step-000110"), std::string::npos) << avg.DebugString();
  ASSERT_TRUE(ReadCheckpointManifest(avg.final_checkpoint().path()).ok()) << avg.DebugString();
  // SFT on the averaged model: chat data through the template, assistant-only loss.
  const auto& chat = done.jobs(3);
  EXPECT_EQ(chat.inputs().from(), avg.final_checkpoint().path());
  EXPECT_EQ(chat.progress().tokens(), 4096) << chat.DebugString();
  EXPECT_GT(chat.progress().loss(), 0.0);
  // The eval stage measured the SFT model without writing a checkpoint; `loom eval` on the same
  // checkpoint in this process measures the same values.
  const auto& measure = done.jobs(4);
  EXPECT_EQ(measure.state(), loom::v1::JOB_STATE_SUCCEEDED) << measure.DebugString();
  EXPECT_FALSE(measure.has_final_checkpoint()) << measure.DebugString();
  ASSERT_TRUE(measure.eval_loss().contains("math")) << measure.DebugString();
  ASSERT_TRUE(measure.eval_metrics().contains("sft_math/accuracy")) << measure.DebugString();
  EXPECT_EQ(measure.eval_metrics().at("sft_math/problems"), 4) << measure.DebugString();
  const double accuracy = measure.eval_metrics().at("sft_math/accuracy");
  EXPECT_GE(accuracy, 0.0);
  EXPECT_LE(accuracy, 1.0);
  const std::string eval_out = cluster.dir() + "/eval.json";
  const std::string eval_command = LoomBinary() + " eval " + chat.final_checkpoint().path() + " --data " +
                                   PreparedData() +
                                   " --set math --max-tokens 1024 --seq-len 64 --math --problems 4 --json > " +
                                   eval_out + " 2>&1";
  ASSERT_EQ(std::system(eval_command.c_str()), 0) << ReadAll(eval_out);
  const std::string local = ReadAll(eval_out);
  const nlohmann::json measured = nlohmann::json::parse(local, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(measured.is_object()) << local;
  EXPECT_EQ(measured["eval_metrics"]["sft_math/accuracy"].get<double>(), accuracy) << local;
  EXPECT_NEAR(measured["eval_loss"]["math"].get<double>(), measure.eval_loss().at("math"),
              1e-6 * measure.eval_loss().at("math"))
      << local;
  // The worker's /metrics no longer has this job's series: it removes them when the job's ranks
  // exit (worker_metrics_test covers the values while a job runs and their removal).
  // Held-out losses reach `status --json`.
  EXPECT_TRUE(core.eval_loss().contains("math")) << core.DebugString();
  EXPECT_TRUE(core.eval_loss().contains("code")) << core.DebugString();
  // The worker's /metrics no longer has this job's series: it removes them when the job's ranks
  // exit (worker_metrics_test covers the values while a job runs and their removal).
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

TEST(TrainingCluster, DataTensorAndPipelineParallelStagesMeetThroughTheCoordinatorAndMatchOneRank) {
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
  // apart slowly: the first 20 steps agree to 1e-4 (issue 6's bound), the rest as ExpectSameTraining says.
  ExpectSameTraining(dp1, dp2, 1e-4, 20, "dp");
  EXPECT_TRUE(b.jobs(1).final_checkpoint().final());

  // Tensor parallel: tp=2 (heads, MLP and vocabulary split) on a worker with two slots (the
  // scheduler keeps a tensor-parallel group on one machine); pipeline parallel: two stages of two
  // layers, 1F1B over the micro-batches. The same training as one rank: tensor parallelism sums in
  // another order (1e-4 over the first 20 steps), the stages in the same one (1e-9). Later stages
  // (continued pre-training, SFT, eval) load the gathered checkpoints, and held-out evaluation
  // reads the gathered model.
  cluster.StartWorker("w3", 2);
  const auto eval1 = RankEvalLosses(RankLog(cluster, a.jobs(0).rank_workers(0), one, "core", 1));
  ASSERT_EQ(eval1.size(), 4u);  // math and code at steps 60 and 120
  for (const auto& [name, tp, pp, early] :
       {std::tuple<std::string, int, int, double>{"tp", 2, 1, 1e-4}, {"pp", 1, 2, 1e-9}}) {
    const std::string id = cluster.Submit(WritePlan(cluster, 1, name, tp, pp));
    PlanStatus c = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
    ASSERT_EQ(c.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
    ASSERT_EQ(c.jobs(0).rank_workers_size(), 2);
    if (tp > 1) {
      EXPECT_EQ(c.jobs(0).rank_workers(0), "w3");
    }
    const auto losses = RankLosses(RankLog(cluster, c.jobs(0).rank_workers(1), id, "core", 1, 1));
    ASSERT_EQ(losses.size(), 120u);
    ExpectSameTraining(dp1, losses, early, 20, name);
    const auto eval = RankEvalLosses(RankLog(cluster, c.jobs(0).rank_workers(0), id, "core", 1));
    ASSERT_EQ(eval.size(), eval1.size()) << name;
    for (const auto& [key, loss] : eval1) EXPECT_NEAR(eval.at(key), loss, 1e-2 * loss) << name << " " << key;
  }
}

// One pre-training stage of a small model: 200 steps of 512 tokens, a checkpoint every 5.
std::string WriteSmallPlan(const Cluster& cluster, const std::string& name) {
  const std::string path = cluster.dir() + "/" + name + ".yaml";
  std::ofstream(path) << "name: " << name << R"(
seed: 3
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
data: {dir: )" << PreparedData() << R"(}
defaults:
  parallel: {dp: 1, micro_batch_size: 2}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: 5, keep_last: 0}
stages:
  - name: core
    kind: pretrain
    tokens: 100Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
)";
  return path;
}

// The coordinator restarts while a rank trains and a checkpoint falls due: the rank waits to
// confirm its write lease until the coordinator is back (which grants it again), then commits, and
// the attempt carries on. Before, an unreachable coordinator fenced the rank at its next
// checkpoint and the attempt was retried.
TEST(TrainingCluster, ACoordinatorRestartDuringTrainingCostsNoAttempt) {
  Cluster cluster({.rank_binary = RankBinary()});
  const std::string path = WriteSmallPlan(cluster, "restart");
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  const std::string id = cluster.Submit(path);
  cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 10; });
  cluster.KillCoordinator();
  const std::string rank_log = RankLog(cluster, "w1", id, "core", 1);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until && ReadAll(rank_log).find("waiting up to") == std::string::npos)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::this_thread::sleep_for(std::chrono::seconds(1));
  cluster.StartCoordinator();
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).attempt(), 1) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).final_checkpoint().step(), 200);
  const std::string log = ReadAll(rank_log);
  EXPECT_NE(log.find("is unreachable"), std::string::npos) << "no checkpoint fell due while it was away\n" << log;
  EXPECT_EQ(log.find("fenced"), std::string::npos) << log;
}

// Taking a host out of service, by `loom workers drain` or by stopping its worker (SIGTERM:
// systemctl stop, Slurm's signal before a time limit): no new ranks go there, and its rank saves a
// checkpoint at its next step boundary and stops (exit 76); the job moves at once to the other
// worker from that checkpoint, as a planned move (cause preempted, outside the retry budget),
// losing no step. Before, a drained worker's rank trained on, and a stop cost the steps since the
// last checkpoint.
TEST(TrainingCluster, ADrainedOrStoppedWorkersRankCheckpointsAtItsNextStepAndTheJobMovesLosingNoStep) {
  for (const bool sigterm : {false, true}) {
    SCOPED_TRACE(sigterm ? "SIGTERM" : "loom workers drain");
    Cluster cluster({.rank_binary = RankBinary()});
    const std::string path = WriteSmallPlan(cluster, "drain");
    cluster.StartCoordinator();
    cluster.StartWorker("w1", 1);
    const std::string id = cluster.Submit(path);
    const PlanStatus running =
        cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 10; });
    cluster.StartWorker("w2", 1);
    const int64_t at_drain = running.jobs(0).progress().step();
    if (sigterm) {
      const int status = cluster.KillWorker("w1", SIGTERM);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status << "\n" << cluster.Logs();
    } else {
      ASSERT_EQ(cluster.Loom({"workers", "drain", "w1"}).exit_code, 0);
    }
    const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
    ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
    EXPECT_EQ(s.jobs(0).attempt(), 2);
    EXPECT_EQ(s.jobs(0).rank_workers(0), "w2");
    EXPECT_EQ(s.jobs(0).last_failure().cause(), "preempted") << s.jobs(0).DebugString();
    if (!sigterm) {
      EXPECT_NE(cluster.Loom({"workers"}).out.find("DRAINING"), std::string::npos);
    }
    // Attempt 1 stopped right after its checkpoint at step N (>= the step seen before the drain);
    // attempt 2 resumed from that very checkpoint and began at N + 1: no step was lost or redone.
    const std::string first_log = ReadAll(RankLog(cluster, "w1", id, "core", 1));
    std::smatch stopped;
    ASSERT_TRUE(std::regex_search(first_log, stopped,
                                  std::regex(R"(stopped on request after the checkpoint at step ([0-9]+))")))
        << first_log;
    const int64_t n = std::stoll(stopped[1]);
    EXPECT_GE(n, at_drain);
    EXPECT_NE(s.jobs(0).resumed_from().find("/core/attempt-1/" + CheckpointDirName(n)), std::string::npos)
        << s.jobs(0).resumed_from();
    EXPECT_NE(cluster.worker("w1")->log().find("core#1/rank0: exited with 76"), std::string::npos) << cluster.Logs();
    const auto first = RankLosses(RankLog(cluster, "w1", id, "core", 1));
    const auto second = RankLosses(RankLog(cluster, "w2", id, "core", 2));
    ASSERT_FALSE(first.empty());
    ASSERT_FALSE(second.empty());
    EXPECT_EQ(first.rbegin()->first, n);
    EXPECT_EQ(second.begin()->first, n + 1);
    if (!sigterm) {
      const int status = cluster.KillWorker("w1", SIGTERM);  // idle now: it leaves at once
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
    }
  }
}

// Elastic data parallelism: a dp=2 job whose second worker dies comes back on the one that is
// left with dp=1, from the last checkpoint, with the same global batch (two micro-batches per
// step instead of one), and continues the same training.
TEST(TrainingCluster, AnElasticJobThatLosesAWorkerContinuesOnFewerRanksWithTheSameGlobalBatch) {
  Cluster cluster({.rank_binary = RankBinary()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string plan = WritePlan(cluster, 2, "elastic", 1, 1, /*elastic=*/true);
  // Uninterrupted, for reference.
  const std::string straight_id = cluster.Submit(plan);
  const PlanStatus straight = cluster.WaitForPlan(straight_id, Ended, std::chrono::seconds(120));
  ASSERT_EQ(straight.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto reference = RankLosses(RankLog(cluster, straight.jobs(0).rank_workers(0), straight_id, "core", 1));
  ASSERT_EQ(reference.size(), 120u);

  const std::string id = cluster.Submit(plan);
  const PlanStatus running = cluster.WaitForPlan(id, [](const PlanStatus& s) {
    return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).last_checkpoint().step() >= 10;
  });
  ASSERT_EQ(running.jobs(0).rank_workers_size(), 2);
  ASSERT_LT(running.jobs(0).last_checkpoint().step(), 110) << "the stage ran too fast to be interrupted";
  const std::string victim = running.jobs(0).rank_workers(1);
  cluster.KillWorker(victim);
  const PlanStatus done = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& core = done.jobs(0);
  EXPECT_EQ(core.attempt(), 2);
  ASSERT_EQ(core.rank_workers_size(), 1);
  const std::string survivor = core.rank_workers(0);
  EXPECT_NE(survivor, victim);
  EXPECT_NE(cluster.Logs().find("elastic: dp 1 of 2, the same global batch"), std::string::npos) << cluster.Logs();
  EXPECT_EQ(core.progress().tokens(), 60 * 1024);
  // From the checkpoint on, one rank sums what two did: the same training (1e-4 over the first
  // ten steps, as dp=2 against one process; then ExpectSameTraining's bounds), at the global
  // batch of 512 tokens.
  const auto after = RankLosses(RankLog(cluster, survivor, id, "core", 2));
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after.rbegin()->first, 120);
  ExpectSameTraining(reference, after, 1e-4, after.begin()->first + 9, "elastic");
  const std::string log = ReadAll(RankLog(cluster, survivor, id, "core", 2));
  EXPECT_EQ(log.find(" batch 256 "), std::string::npos) << "a step ran with half the global batch";
  EXPECT_NE(log.find(" batch 512 "), std::string::npos) << log.substr(0, 2000);
}

// Post-training through the control plane: pre-training on math, SFT on math chats, then an
// offline DPO stage on math preference pairs whose reference (the SFT model) runs once, with its
// log-probabilities cached beside the stage's checkpoints. The DPO metrics reach `status --json`
// and /metrics while the job runs, and the held-out preference margin (log p(chosen) −
// log p(rejected)) rises over the SFT model's. A reward_model stage trains on the same pairs, and a rejection_sampling stage
// scored by it keeps each prompt's best-scoring sample.
TEST(TrainingCluster, DpoRewardModelAndRewardScoredSamplingRunThroughTheControlPlane) {
  const std::string data =
      PrepareData("prefs", "math,sft_math,prefs_math", 512, "--heldout 0.2 --prefs-docs 800 --max-docs 800");
  Cluster cluster({.rank_binary = RankBinary()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  const std::string path = cluster.dir() + "/post.yaml";
  std::ofstream(path) << R"(name: post
seed: 4
model: {layers: 2, d_model: 128, heads: 4, kv_heads: 2, ffn_size: 256, vocab_size: 512}
data: {dir: )" << data << R"(}
defaults:
  parallel: {micro_batch_size: 4}
  optimizer: {lr: 3e-3}
  lr_schedule: {type: cosine, warmup_tokens: 2Ki}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
  checkpoint: {every_steps: 0, keep_last: 1}
stages:
  - name: core
    kind: pretrain
    tokens: 48Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
  - name: chat
    kind: sft
    from: core
    tokens: 16Ki
    dataset: {source: sft_math}
    optimizer: {lr: 1e-3}
  - name: prefs
    kind: dpo
    from: chat
    tokens: 96Ki
    dataset: {source: prefs_math, epochs: 10}
    optimizer: {lr: 3e-4, weight_decay: 0}
    lr_schedule: {type: constant}
    dpo: {beta: 0.1}
    eval: {every_steps: 8}
  - name: rm
    kind: reward_model
    from: chat
    tokens: 48Ki
    dataset: {source: prefs_math, epochs: 10}
    optimizer: {lr: 3e-4, weight_decay: 0}
    lr_schedule: {type: constant}
    eval: {every_steps: 16}
  - name: best
    kind: rejection_sampling
    from: chat
    dataset: {source: sft_math}
    rejection_sampling:
      samples_per_prompt: 4
      max_prompts: 8
      sampling: {temperature: 1.0, max_new_tokens: 48}
      scorer: {reward_model: rm}
)";
  const std::string plan_id = cluster.Submit(path);
  const PlanStatus done = cluster.WaitForPlan(plan_id, Ended, std::chrono::seconds(300));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& chat = done.jobs(1);
  const auto& prefs = done.jobs(2);
  EXPECT_EQ(prefs.inputs().reference(), chat.final_checkpoint().path()) << prefs.DebugString();
  const std::string log = ReadAll(RankLog(cluster, prefs.rank_workers(0), plan_id, "prefs", 1));
  EXPECT_NE(log.find("pairs computed"), std::string::npos) << log;
  EXPECT_NE(log.find("(0 pairs longer than seq_len 128 are cut)"), std::string::npos) << log;
  const std::string cache =
      std::filesystem::path(prefs.final_checkpoint().path()).parent_path().parent_path() / "reference_logprobs.rank0.bin";  // the stage's cache_dir
  EXPECT_TRUE(std::filesystem::exists(cache)) << cache;

  const auto& train = prefs.progress().train_metrics();
  for (const char* name : {"dpo/accuracy", "dpo/margin", "dpo/chosen_reward", "dpo/rejected_reward"}) {
    EXPECT_TRUE(train.contains(name)) << name << "\n" << prefs.DebugString();
  }
  EXPECT_LT(prefs.progress().loss(), std::log(2.0)) << prefs.DebugString();
  EXPECT_GT(train.at("dpo/margin"), 0.0) << prefs.DebugString();
  const auto& eval = prefs.eval_metrics();
  ASSERT_TRUE(eval.contains("prefs_math/accuracy/before")) << prefs.DebugString();
  ASSERT_TRUE(eval.contains("prefs_math/accuracy")) << prefs.DebugString();
  const double before = eval.at("prefs_math/accuracy/before"), after = eval.at("prefs_math/accuracy");
  std::printf("held-out preference accuracy: SFT model %.3f, after DPO %.3f (margin %.3f -> %.3f)\n", before, after,
              eval.at("prefs_math/margin/before"), eval.at("prefs_math/margin"));
  // Measured at this plan: accuracy 0.628 -> 0.669 and margin 0.35 -> 1.72 nats. Over seven DPO
  // settings (lr 1e-4..1e-3, 48Ki..192Ki tokens, 2 or 4 layers) the margin gain was 0.8..2.5 while
  // the accuracy moved by -0.05..+0.06: a model this small does not learn the arithmetic that
  // separates the pairs, so the robust claim asserted here is the margin.
  EXPECT_GT(eval.at("prefs_math/margin"), eval.at("prefs_math/margin/before") + 0.7) << prefs.DebugString();
  // The worker's /metrics no longer has this job's series: it removes them when the job's ranks
  // exit (worker_metrics_test covers the values while a job runs and their removal).

  // The reward model (the SFT model with its end-of-turn logit as the scalar head, Bradley–Terry
  // loss) trains and reports its held-out pair accuracy. Measured: 0.570 at the start, 0.52-0.59
  // after 48Ki-192Ki tokens at lr 1e-4..1e-3 — a model this small does not learn to rank held-out
  // arithmetic (the engine test shows it ranks its training pairs), so no gain is asserted.
  const auto& rm = done.jobs(3);
  ASSERT_TRUE(rm.progress().train_metrics().contains("rm/accuracy")) << rm.DebugString();
  ASSERT_TRUE(rm.eval_metrics().contains("prefs_math/accuracy")) << rm.DebugString();
  const double rm_before = rm.eval_metrics().at("prefs_math/accuracy/before");
  const double rm_after = rm.eval_metrics().at("prefs_math/accuracy");
  std::printf("reward model held-out pair accuracy: %.3f at the start, %.3f after training\n", rm_before, rm_after);
  EXPECT_GE(rm_after, 0.0);
  EXPECT_LE(rm_after, 1.0);
  EXPECT_TRUE(std::isfinite(rm.eval_metrics().at("prefs_math/margin"))) << rm.DebugString();

  // Rejection sampling scored by that reward model keeps each prompt's best-scoring sample.
  const auto& best = done.jobs(4);
  EXPECT_EQ(best.inputs().reward_model(), rm.final_checkpoint().path()) << best.DebugString();
  EXPECT_EQ(best.eval_metrics().at("rs/prompts"), 8) << best.DebugString();
  EXPECT_EQ(best.eval_metrics().at("rs/kept"), 8) << best.DebugString();
}

// Rejection sampling and RL through the control plane: a chat model drilled on a handful of math
// chats samples answers to their prompts on two ranks (each writes its block of the dataset, the
// directory commits as the stage's output), an SFT stage trains on that dataset by naming the
// stage (dataset.from_stage), an rl stage (RLOO, dp 2) trains the drilled model on its own
// verified samples, and an online dpo stage on pairs of them.
TEST(TrainingCluster, RejectionSamplingFeedsAnSftStageAndAnRlStageTrainsOnItsOwnSamples) {
  const std::string data = PrepareData("rs", "math,sft_math", 512, "--max-docs 16 --heldout 0.25");
  Cluster cluster({.rank_binary = RankBinary()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string path = cluster.dir() + "/rs.yaml";
  std::ofstream(path) << R"(name: rs
seed: 5
model: {layers: 2, d_model: 128, heads: 4, kv_heads: 2, ffn_size: 256, vocab_size: 512}
data: {dir: )" << data << R"(}
defaults:
  parallel: {micro_batch_size: 4}
  optimizer: {lr: 3e-3, weight_decay: 0}
  lr_schedule: {type: constant}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
  checkpoint: {every_steps: 0, keep_last: 1}
stages:
  - name: core
    kind: pretrain
    tokens: 8Ki
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
  - name: drill
    kind: sft
    from: core
    dataset: {source: sft_math, epochs: 80}
  - name: samples
    kind: rejection_sampling
    from: drill
    parallel: {dp: 2}
    dataset: {source: sft_math}
    rejection_sampling:
      samples_per_prompt: 4
      sampling: {temperature: 1.0, max_new_tokens: 64}
      scorer: {verifier: math}
      keep: all_correct
  - name: rft
    kind: sft
    from: core
    dataset: {from_stage: samples, epochs: 2}
  - name: rloo
    kind: rl
    from: drill
    tokens: 8Ki
    parallel: {dp: 2}
    dataset: {source: sft_math, epochs: 10}
    optimizer: {lr: 3e-4}
    rl:
      samples_per_prompt: 4
      sampling: {temperature: 1.0, max_new_tokens: 64}
      scorer: {verifier: math}
      kl_coef: 0.05
    eval: {every_steps: 4, math_accuracy: true, math_problems: 4}
  - name: online
    kind: dpo
    from: drill
    tokens: 4Ki
    dataset: {source: sft_math, epochs: 10}
    optimizer: {lr: 1e-4}
    dpo:
      online: true
      samples_per_prompt: 4
      sampling: {temperature: 1.0, max_new_tokens: 64}
      scorer: {verifier: math}
)";
  const std::string plan_id = cluster.Submit(path);
  const PlanStatus done = cluster.WaitForPlan(plan_id, Ended, std::chrono::seconds(300));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& samples = done.jobs(2);
  ASSERT_EQ(samples.rank_workers_size(), 2) << samples.DebugString();
  const std::string dataset = samples.final_checkpoint().path();
  ASSERT_FALSE(dataset.empty()) << samples.DebugString();
  int64_t lines = 0;
  for (const char* part : {"/part-00000.jsonl", "/part-00001.jsonl"}) {
    ASSERT_TRUE(std::filesystem::exists(dataset + part)) << dataset + part;
    std::ifstream in(dataset + part);
    for (std::string line; std::getline(in, line);) lines += !line.empty();
  }
  const auto& m = samples.eval_metrics();
  std::printf("rejection sampling: %.0f prompts, pass@1 %.3f, best-of-4 %.3f, %.0f kept\n", m.at("rs/prompts"),
              m.at("rs/pass@1"), m.at("rs/best_of_n"), m.at("rs/kept"));
  EXPECT_GT(m.at("rs/prompts"), 0) << samples.DebugString();
  EXPECT_EQ(m.at("rs/samples"), 4 * m.at("rs/prompts"));
  EXPECT_GE(m.at("rs/best_of_n"), m.at("rs/pass@1"));
  EXPECT_GT(m.at("rs/kept"), 0) << "the drilled model answered nothing right";
  EXPECT_EQ(m.at("rs/kept"), lines) << "every kept sample is a line of the dataset, across both ranks' parts";
  // And a document of the parts' token shards, tokens and loss mask alike.
  int64_t documents = 0;
  for (const char* part : {"/part-00000", "/part-00001"}) {
    for (const char* kind : {".tokens.shard", ".mask.shard"}) {
      auto shard = loom::data::ShardReader::Open(dataset + part + kind);
      ASSERT_TRUE(shard.ok()) << shard.status();
      if (std::string(kind) == ".tokens.shard") documents += (*shard)->doc_count();
    }
  }
  EXPECT_EQ(documents, lines);
  const auto& rft = done.jobs(3);
  EXPECT_EQ(rft.inputs().dataset(), dataset) << rft.DebugString();
  EXPECT_GT(rft.progress().step(), 0) << rft.DebugString();

  // The rl stage sampled from its own policy on both ranks, scored by the verifier, and reported
  // the mean reward, KL and math accuracy before and after.
  const auto& rloo = done.jobs(4);
  EXPECT_EQ(rloo.progress().step(), 8) << rloo.DebugString();
  EXPECT_EQ(rloo.inputs().reference(), done.jobs(1).final_checkpoint().path()) << rloo.DebugString();
  for (const char* name : {"rl/reward", "rl/kl", "rl/advantage_abs", "rl/completion_tokens"}) {
    EXPECT_TRUE(rloo.progress().train_metrics().contains(name)) << name << "\n" << rloo.DebugString();
  }
  EXPECT_GT(rloo.progress().train_metrics().at("rl/completion_tokens"), 0);
  EXPECT_TRUE(rloo.eval_metrics().contains("sft_math/accuracy/before")) << rloo.DebugString();
  EXPECT_TRUE(rloo.eval_metrics().contains("sft_math/accuracy")) << rloo.DebugString();

  // Online DPO: pairs from the drilled model's own samples each step, against the drilled model.
  const auto& online = done.jobs(5);
  EXPECT_EQ(online.progress().step(), 4) << online.DebugString();
  for (const char* name : {"online/accuracy", "online/tied", "dpo/margin", "dpo/accuracy"}) {
    EXPECT_TRUE(online.progress().train_metrics().contains(name)) << name << "\n" << online.DebugString();
  }
  EXPECT_GT(online.progress().train_metrics().at("online/accuracy"), 0) << online.DebugString();
}

}  // namespace
}  // namespace loom::testing
