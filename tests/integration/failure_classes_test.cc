// Failing fast on the plan's faults and recovering from the cluster's, with real processes: a
// plan whose tokenizer is missing is refused at submit with its field path; a rank that fails with
// a plan fault fails its job at once (one attempt) with the class in the reason, the status and a
// metric; and under `loom up` a worker killed mid-stage is restarted and the job resumes on it
// from its last committed checkpoint.
#include <dirent.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

std::string RankBinary() { return BinaryPath("worker/loom-rank"); }

// One pretrain stage on the prepared math and code shards: `steps` steps of 512 tokens on dp
// ranks, a checkpoint every 10 steps.
std::string WritePlan(const std::string& path, const std::string& name, int vocab, int dp, int steps,
                      const std::string& data_dir = "") {
  std::ofstream(path) << "name: " << name << R"(
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: )"
                      << vocab << "}\n"
                      << (data_dir.empty() ? "" : "data: {dir: " + data_dir + "}\n") << R"(stages:
  - name: core
    kind: pretrain
    tokens: )" << steps * 512
                      << R"(
    parallel: {dp: )" << dp << R"(, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 10, keep_last: 0}
)";
  return path;
}

TEST(FailureClasses, AMissingTokenizerIsRefusedAtSubmitWithItsFieldPath) {
  Cluster probe;
  const std::string empty = probe.dir() + "/prepared";  // `loom up` without --prepared-data
  std::filesystem::create_directories(empty);
  Cluster cluster({.prepared_data = empty});
  cluster.StartCoordinator();
  const std::string plan = WritePlan(cluster.dir() + "/plan.yaml", "nodata", 512, 1, 20);
  const CommandResult r = cluster.Loom({"submit", plan});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("data.tokenizer: is empty, and its default: " + empty + "/tokenizer.model does not exist"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stages[0].data_mix[0].weights.math: " + empty + "/math/train does not exist"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--prepared-data"), std::string::npos) << r.err;  // the hint names the fix
  EXPECT_NE(cluster.Loom({"status"}).out.find("no plans"), std::string::npos);
}

TEST(FailureClasses, APlanFaultOnARankFailsTheJobAtOnce) {
  Cluster cluster({.rank_binary = RankBinary(), .prepared_data = PreparedData()});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  // The prepared tokenizer has 512 pieces: a 256-token model cannot embed them. Only a rank can
  // know it (the coordinator does not read tokenizers).
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml", "small", 256, 1, 20));
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(60));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_FAILED) << cluster.Logs();
  const loom::v1::JobStatus& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 1);
  EXPECT_EQ(core.last_failure().failure_class(), loom::v1::FAILURE_CLASS_PLAN) << core.DebugString();
  EXPECT_EQ(core.last_failure().cause(), "config");
  EXPECT_NE(core.reason().find("attempt 1 failed (plan fault: configuration rejected): rank 0 on w1 exited with "
                               "code 78"),
            std::string::npos)
      << core.reason();
  EXPECT_NE(core.reason().find("model.vocab_size 256 is smaller than the tokenizer's 512"), std::string::npos)
      << core.reason();
  const CommandResult json = cluster.Loom({"status", id, "--json"});
  EXPECT_NE(json.out.find("\"failure_class\": \"FAILURE_CLASS_PLAN\""), std::string::npos) << json.out;
  // /metrics is refreshed every half second.
  double failures = 0;
  for (int i = 0; i < 50 && !(failures == 1); ++i) {
    failures = MetricValue(HttpGet(cluster.coordinator_metrics(), "/metrics"), "loom_attempt_failures_total",
                           "cause=\"config\",class=\"plan\"");
    if (!(failures == 1)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(failures, 1);
}

TEST(FailureClasses, LoomUpRestartsAKilledWorkerAndTheJobResumesOnIt) {
  Cluster cluster;  // for its directory, port and client
  const std::string up_dir = cluster.dir() + "/up";
  Process up({LoomBinary(), "up", "--workers", "2", "--data-dir", up_dir, "--prepared-data", PreparedData(),
              "--listen", cluster.address(), "--metrics-listen", "127.0.0.1:0"},
             cluster.dir() + "/up.log");
  ASSERT_FALSE(up.WaitForLog("loom up: coordinator on").empty()) << up.log();
  // `loom up` uses mutual TLS by default, with certificates in its data directory.
  cluster.SetClientTls(up_dir + "/tls");
  // dp = 2: a rank on each worker; 400 steps, a checkpoint every 10.
  const std::string plan = WritePlan(cluster.dir() + "/plan.yaml", "healing", 512, 2, 400);
  std::string id;
  for (int tries = 0; id.empty() && tries < 150; ++tries) {
    const CommandResult r = cluster.Loom({"submit", plan, "--quiet"});
    if (r.exit_code == 0) {
      id = r.out.substr(0, r.out.find('\n'));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_EQ(id, "healing-1") << up.log();
  // Mid-stage, after a checkpoint is committed: SIGKILL the second worker's daemon (its rank dies
  // with it).
  const PlanStatus running = cluster.WaitForPlan(
      id,
      [](const PlanStatus& s) {
        return Ended(s) || (s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).last_checkpoint().step() >= 10);
      },
      std::chrono::seconds(120));
  ASSERT_EQ(running.jobs(0).state(), loom::v1::JOB_STATE_RUNNING) << up.log();
  const pid_t worker = FindProcess({"loom-worker", up_dir + "/worker-1"});
  ASSERT_GT(worker, 0);
  ASSERT_EQ(kill(worker, SIGKILL), 0);

  const PlanStatus done = cluster.WaitForPlan(id, Ended, std::chrono::seconds(240));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << up.log() << done.DebugString();
  const loom::v1::JobStatus& core = done.jobs(0);
  EXPECT_EQ(core.attempt(), 2);
  EXPECT_EQ(core.last_failure().cause(), "worker_lost") << core.DebugString();
  // The second attempt resumed from a committed checkpoint at or after the one seen before the kill.
  ASSERT_FALSE(core.resumed_from().empty()) << core.DebugString();
  EXPECT_NE(core.resumed_from().find(up_dir + "/checkpoints/healing-1/core/attempt-1/step-"), std::string::npos);
  EXPECT_GE(std::stoi(core.resumed_from().substr(core.resumed_from().rfind('-') + 1)), 10);
  EXPECT_EQ(core.final_checkpoint().step(), 400);
  const std::string log = up.log();
  EXPECT_NE(log.find("loom up: worker local-1 (pid " + std::to_string(worker) + ") was killed by signal 9"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("loom up: restarted worker local-1"), std::string::npos) << log;
  // The restarted worker took part: both workers ran the second attempt's ranks.
  ASSERT_EQ(core.rank_workers_size(), 2);
  EXPECT_NE(core.rank_workers(0), core.rank_workers(1));

  const int status = up.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << up.log();
}

}  // namespace
}  // namespace loom::testing
