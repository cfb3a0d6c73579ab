// /metrics of the coordinator and of a worker during a run: scraped over HTTP, linted with
// promtool, and scraped by a real Prometheus server whose query API must return the series.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prometheus_server.h"

namespace loom::testing {
namespace {

const std::string kPlan = SourcePath("tests/integration/two_stage_plan.yaml");

// `promtool check metrics` on `text`: its output, empty when clean.
std::string Promtool(const Cluster& cluster, const std::string& text, int* exit_code) {
  const std::string in = cluster.dir() + "/metrics.txt", out = cluster.dir() + "/promtool.out";
  std::ofstream(in) << text;
  const int status = std::system(("promtool check metrics < " + in + " > " + out + " 2>&1").c_str());
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return ReadAll(out);
}

TEST(ClusterMetrics, CoordinatorAndWorkerExposeTheirMetricsWithSaneValues) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=250"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  cluster.WaitForPlan(id, [](const loom::v1::PlanStatus& s) {
    return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).last_checkpoint().step() >= 5;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // the coordinator refreshes every 0.5 s

  const std::string c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(MetricValue(c, "loom_job_state", R"(stage="core",state="running")"), 1) << c;
  EXPECT_EQ(MetricValue(c, "loom_job_state", R"(stage="core",state="pending")"), 0) << c;
  EXPECT_EQ(MetricValue(c, "loom_job_state", R"(stage="more",state="pending")"), 1) << c;
  EXPECT_EQ(MetricValue(c, "loom_job_attempts_total", R"(stage="core")"), 1) << c;
  EXPECT_EQ(MetricValue(c, "loom_workers", R"(state="busy")"), 1) << c;
  EXPECT_EQ(MetricValue(c, "loom_workers", R"(state="lost")"), 0) << c;
  const double age = MetricValue(c, "loom_worker_heartbeat_age_seconds", R"(worker="w1")");
  EXPECT_GE(age, 0) << c;
  EXPECT_LT(age, 2) << c;
  EXPECT_EQ(MetricValue(c, "loom_scheduler_pending_jobs"), 1) << c;  // "more" waits for "core"
  EXPECT_GE(MetricValue(c, "loom_checkpoints_committed_total"), 1) << c;
  EXPECT_EQ(MetricValue(c, "loom_build_info", R"(version=")"), 1) << c;
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_NEAR(MetricValue(c, "loom_worker_last_heartbeat_timestamp_seconds", R"(worker="w1")"), now, 5) << c;
  EXPECT_NEAR(MetricValue(c, "loom_job_last_checkpoint_timestamp_seconds", R"(stage="core")"), now, 10) << c;
  EXPECT_TRUE(std::isnan(MetricValue(c, "loom_job_last_checkpoint_timestamp_seconds", R"(stage="more")"))) << c;
  // The fake rank's checkpoint: its manifest and the "fake weights of ..." file.
  EXPECT_GT(MetricValue(c, "loom_job_last_checkpoint_bytes", R"(stage="core")"), 100) << c;

  const std::string w = HttpGet(cluster.worker_metrics("w1"), "/metrics");
  ASSERT_FALSE(w.empty());
  const std::string core = R"(stage="core")";
  const double loss = MetricValue(w, "loom_train_loss", core);
  EXPECT_GT(loss, 1) << w;
  EXPECT_LT(loss, 7) << w;
  EXPECT_GE(MetricValue(w, "loom_train_tokens_total", core), 5 * 256) << w;
  EXPECT_GT(MetricValue(w, "loom_train_tokens_per_second", core), 0) << w;
  EXPECT_DOUBLE_EQ(MetricValue(w, "loom_train_learning_rate", core), 1e-3) << w;
  EXPECT_GT(MetricValue(w, "loom_train_grad_norm", core), 0) << w;
  EXPECT_EQ(MetricValue(w, "loom_train_global_batch_tokens", core), 256) << w;
  EXPECT_EQ(MetricValue(w, "loom_train_seq_len", core), 128) << w;
  EXPECT_EQ(MetricValue(w, "loom_data_mix_weight", R"(source="english")"), 1) << w;
  EXPECT_GE(MetricValue(w, "loom_checkpoint_save_seconds_count", core), 1) << w;
  EXPECT_GE(MetricValue(w, "loom_checkpoint_save_seconds_sum", core), 0) << w;
  EXPECT_NE(w.find("loom_checkpoint_save_seconds_count{plan=\"" + id + "\",stage=\"core\"}"),
            std::string::npos)
      << w;
  // MFU: the worker measured its slots' peak at start-up; the job's figure is exported once
  // (rank 0's worker), from the fake rank's 1024 tokens/s of the plan's model.
  const double peak = MetricValue(w, "loom_worker_peak_flops");
  EXPECT_GT(peak, 1e8) << w;
  const double mfu = MetricValue(w, "loom_train_mfu_ratio", core);
  EXPECT_GT(mfu, 0) << w;
  EXPECT_LT(mfu, 1) << w;
  EXPECT_EQ(w.find("loom_train_mfu_ratio{plan=\"" + id + "\",rank="), std::string::npos) << w;
  const CommandResult status = cluster.Loom({"status", id});
  EXPECT_NE(status.out.find("tok/s (MFU "), std::string::npos) << status.out;
  EXPECT_EQ(MetricValue(w, "loom_worker_ranks_running"), 2) << w;
  EXPECT_EQ(MetricValue(w, "loom_build_info", R"(version=")"), 1) << w;
  // Per-rank timings with a rank label (the fake rank's 250 ms sleep is its compute), and the
  // step-time histogram once per job.
  for (const char* rank : {R"(rank="0")", R"(rank="1")"}) {
    EXPECT_GE(MetricValue(w, "loom_rank_step_compute_seconds", rank), 0.25) << w;
    EXPECT_EQ(MetricValue(w, "loom_rank_step_communication_wait_seconds", rank), 0) << w;
    EXPECT_EQ(MetricValue(w, "loom_rank_step_data_wait_seconds", rank), 0) << w;
  }
  EXPECT_GE(MetricValue(w, "loom_train_step_duration_seconds_count", core), 5) << w;
  EXPECT_EQ(MetricValue(w, "loom_train_step_duration_seconds_bucket", R"(le="0.1")"), 0) << w;
  EXPECT_EQ(w.find("loom_train_step_duration_seconds_count{plan=\"" + id + "\",rank="), std::string::npos) << w;

  // `promtool check metrics`: exit 0 and no lint output at all.
  int rc = 0;
  std::string lint = Promtool(cluster, c, &rc);
  EXPECT_EQ(rc, 0) << lint;
  EXPECT_EQ(lint, "") << lint;
  lint = Promtool(cluster, w, &rc);
  EXPECT_EQ(rc, 0) << lint;
  EXPECT_EQ(lint, "") << lint;
}

TEST(ClusterMetrics, ALostWorkersLastHeartbeatStaysWhileItsAgeGoes) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  std::string c;
  for (int i = 0; i < 50 && std::isnan(MetricValue(c, "loom_worker_heartbeat_age_seconds", R"(worker="w2")")); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  }
  const double before = MetricValue(c, "loom_worker_last_heartbeat_timestamp_seconds", R"(worker="w2")");
  ASSERT_FALSE(std::isnan(before)) << c;
  const double killed = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  cluster.KillWorker("w2");
  for (int i = 0; i < 80 && MetricValue(c, "loom_workers", R"(state="lost")") != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  }
  ASSERT_EQ(MetricValue(c, "loom_workers", R"(state="lost")"), 1) << c;
  EXPECT_TRUE(std::isnan(MetricValue(c, "loom_worker_heartbeat_age_seconds", R"(worker="w2")"))) << c;
  const double last = MetricValue(c, "loom_worker_last_heartbeat_timestamp_seconds", R"(worker="w2")");
  EXPECT_GE(last, before) << c;
  EXPECT_LE(last, killed + 0.01) << "no heartbeat after the kill\n" << c;
  // Kept, and not refreshed, while the worker stays lost.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  c = HttpGet(cluster.coordinator_metrics(), "/metrics");
  EXPECT_EQ(MetricValue(c, "loom_worker_last_heartbeat_timestamp_seconds", R"(worker="w2")"), last) << c;
  EXPECT_FALSE(std::isnan(MetricValue(c, "loom_worker_heartbeat_age_seconds", R"(worker="w1")"))) << c;
}

TEST(ClusterMetrics, ARealPrometheusServerScrapesCoordinatorAndWorker) {
  // Slow steps: a job's series go when its rank exits, and Prometheus's first scrape comes a few
  // seconds after it starts, so stage core trains for 10 s.
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=500"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  PrometheusServer prometheus(cluster.dir(), {cluster.coordinator_metrics(), cluster.worker_metrics("w1")});
  const std::string id = cluster.Submit(kPlan);
  cluster.WaitForPlan(id, [](const loom::v1::PlanStatus& s) { return s.jobs(0).progress().step() >= 3; });
  std::map<std::string, std::string> answers;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::vector<std::string> queries = {"loom_train_loss", "loom_job_state", "loom_workers",
                                            "loom_worker_heartbeat_age_seconds", "loom_train_tokens_total"};
  while (std::chrono::steady_clock::now() < until && answers.size() < queries.size()) {
    for (const std::string& q : queries) {
      if (answers.contains(q)) continue;
      const std::string body = prometheus.Get("/api/v1/query?query=" + q);
      if (body.find("\"result\":[{") != std::string::npos) answers[q] = body;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  for (const std::string& q : queries) EXPECT_TRUE(answers.contains(q)) << q << "\n" << prometheus.log();
  EXPECT_NE(answers["loom_train_loss"].find("\"stage\":\"core\""), std::string::npos)
      << answers["loom_train_loss"];
}

}  // namespace
}  // namespace loom::testing
