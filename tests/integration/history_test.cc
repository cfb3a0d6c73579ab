// Run history end to end: a real coordinator and worker daemon on 127.0.0.1 with the fake rank
// (fake_rank_main.cc), read back through the real `loom metrics`, `loom watch --json` and
// `loom logs`.
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

const std::string kPlan = SourcePath("tests/integration/two_stage_plan.yaml");

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

struct Row {
  std::string stage;
  int attempt = 0;
  int64_t step = 0, tokens = 0;
  double loss = 0;
};

// `loom metrics --format csv`, parsed (the header checked).
std::vector<Row> ParseCsv(const std::string& csv) {
  std::vector<Row> rows;
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  EXPECT_FALSE(lines.empty());
  if (lines.empty()) return rows;
  EXPECT_EQ(lines[0].rfind("stage,attempt,step,tokens,loss,learning_rate,grad_norm,tokens_per_second,time_ms", 0), 0u)
      << lines[0];
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], ',');
    EXPECT_GE(f.size(), 9u) << lines[i];
    if (f.size() < 9) continue;
    rows.push_back({f[0], std::stoi(f[1]), std::stoll(f[2]), std::stoll(f[3]), std::stod(f[4])});
  }
  return rows;
}

// step -> loss as the fake rank wrote them in its losses.txt ("step loss time_ms").
std::map<int64_t, double> RankLossFile(const std::string& path) {
  std::map<int64_t, double> out;
  std::ifstream in(path);
  int64_t step;
  double loss;
  int64_t time_ms;
  while (in >> step >> loss >> time_ms) out[step] = loss;
  return out;
}

std::vector<Row> OfStage(const std::vector<Row>& rows, const std::string& stage) {
  std::vector<Row> out;
  for (const Row& r : rows)
    if (r.stage == stage) out.push_back(r);
  return out;
}

TEST(History, WatchJsonAndMetricsShowEveryStepAndSurviveACoordinatorKill) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=40"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  ASSERT_EQ(id, "twostage-1");

  // `loom watch --json` follows the plan to its end: every line is a JSON object.
  const CommandResult watch = cluster.Loom({"watch", id, "--json"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err << cluster.Logs();
  std::vector<std::string> lines = absl::StrSplit(watch.out, '\n', absl::SkipEmpty());
  ASSERT_FALSE(lines.empty());
  std::map<std::string, int> types;
  int64_t max_step = 0;
  bool running = false;
  for (const std::string& line : lines) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << "not a JSON object: " << line;
    ASSERT_TRUE(j.contains("type") && j.contains("plan_id")) << line;
    EXPECT_EQ(j["plan_id"], id);
    ++types[j["type"].get<std::string>()];
    if (j["type"] == "step") {
      max_step = std::max(max_step, j["step"].get<int64_t>());
      EXPECT_TRUE(j["loss"].is_number()) << line;
    }
    if (j["type"] == "job" && j["state"] == "RUNNING") running = true;
  }
  EXPECT_GT(types["step"], 0) << watch.out;
  EXPECT_GE(max_step, 10) << watch.out;
  EXPECT_TRUE(running) << watch.out;
  const nlohmann::json last = nlohmann::json::parse(lines.back());
  EXPECT_EQ(last["type"], "plan") << lines.back();
  EXPECT_EQ(last["state"], "SUCCEEDED") << lines.back();
  EXPECT_EQ(last["ended"], true) << lines.back();

  PlanStatus status;
  ASSERT_TRUE(cluster.Status(id, &status));
  ASSERT_EQ(status.state(), loom::v1::PLAN_STATE_SUCCEEDED);

  // CSV: one row per step of each stage, the losses the rank reported.
  const CommandResult csv = cluster.Loom({"metrics", id, "--format", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  const std::vector<Row> rows = ParseCsv(csv.out);
  const std::map<std::string, int64_t> steps = {{"core", 20}, {"more", 10}};
  for (int j = 0; j < 2; ++j) {
    const loom::v1::JobStatus& job = status.jobs(j);
    const std::vector<Row> stage = OfStage(rows, job.stage());
    ASSERT_EQ(static_cast<int64_t>(stage.size()), steps.at(job.stage())) << csv.out;
    const std::map<int64_t, double> reported =
        RankLossFile(cluster.work_dir("w1") + "/" + id + "/" + job.stage() + "#1/rank0/losses.txt");
    ASSERT_EQ(reported.size(), stage.size());
    for (size_t i = 0; i < stage.size(); ++i) {
      EXPECT_EQ(stage[i].step, static_cast<int64_t>(i + 1));
      EXPECT_EQ(stage[i].attempt, 1);
      EXPECT_EQ(stage[i].tokens, stage[i].step * 256);
      EXPECT_NEAR(stage[i].loss, reported.at(stage[i].step), 1e-5) << job.stage() << " step " << stage[i].step;
    }
    // The last point is the job's progress, to the bit.
    EXPECT_EQ(stage.back().loss, job.progress().loss()) << job.stage();
    EXPECT_EQ(stage.back().step, job.progress().step()) << job.stage();
  }

  // JSON lines: the same points.
  const CommandResult jsonl = cluster.Loom({"metrics", id, "--format", "jsonl"});
  ASSERT_EQ(jsonl.exit_code, 0) << jsonl.err;
  std::vector<std::string> objects = absl::StrSplit(jsonl.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(objects.size(), rows.size());
  for (size_t i = 0; i < objects.size(); ++i) {
    const nlohmann::json j = nlohmann::json::parse(objects[i], nullptr, false);
    ASSERT_TRUE(j.is_object()) << objects[i];
    EXPECT_EQ(j["stage"], rows[i].stage);
    EXPECT_EQ(j["step"].get<int64_t>(), rows[i].step);
    EXPECT_EQ(j["loss"].get<double>(), rows[i].loss);
    EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 1e-3);
  }

  // The table, and one stage alone.
  const CommandResult table = cluster.Loom({"metrics", id});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("LOSS"), std::string::npos) << table.out;
  EXPECT_EQ(std::count(table.out.begin(), table.out.end(), '\n'), 31) << table.out;
  const CommandResult more = cluster.Loom({"metrics", id, "--stage", "more", "--format", "csv"});
  ASSERT_EQ(more.exit_code, 0) << more.err;
  EXPECT_EQ(ParseCsv(more.out).size(), 10u);
  const CommandResult none = cluster.Loom({"metrics", id, "--stage", "nope"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no stage 'nope' (stages: core, more)"), std::string::npos) << none.err;

  // `loom logs`: what each rank printed, read through the coordinator from w1.
  const CommandResult log0 = cluster.Loom({"logs", id, "--stage", "core"});
  ASSERT_EQ(log0.exit_code, 0) << log0.err << cluster.Logs();
  EXPECT_NE(log0.out.find("fake rank 0: step 1 loss"), std::string::npos) << log0.out;
  EXPECT_NE(log0.out.find("fake rank 0: step 20 loss"), std::string::npos) << log0.out;
  EXPECT_EQ(log0.out, ReadAll(cluster.work_dir("w1") + "/" + id + "/core#1/rank0/rank.log"));
  const CommandResult log1 = cluster.Loom({"logs", id, "--stage", "more", "--rank", "1", "--follow"});
  ASSERT_EQ(log1.exit_code, 0) << log1.err;  // --follow ends: the job has ended
  EXPECT_NE(log1.out.find("fake rank 1: step 10 loss"), std::string::npos) << log1.out;
  EXPECT_EQ(log1.out.find("fake rank 0:"), std::string::npos) << log1.out;
  const CommandResult tail = cluster.Loom({"logs", id, "--stage", "core", "--bytes", "40"});
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_EQ(tail.out, log0.out.substr(log0.out.size() - 40));
  const CommandResult no_rank = cluster.Loom({"logs", id, "--stage", "core", "--rank", "2"});
  EXPECT_EQ(no_rank.exit_code, 1);
  EXPECT_NE(no_rank.err.find("has ranks 0 to 1, not 2"), std::string::npos) << no_rank.err;

  // SIGKILL and restart: the history is still there, the same.
  cluster.KillCoordinator(SIGKILL);
  cluster.StartCoordinator();
  // (Its log still holds the first start's line: wait until it answers.)
  CommandResult again;
  for (int i = 0; i < 150; ++i) {
    again = cluster.Loom({"metrics", id, "--format", "csv"});
    if (again.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, csv.out);
}

TEST(History, LogsFollowARunningRankToTheEndOfItsJob) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  cluster.WaitForPlan(id, [](const PlanStatus& s) {
    return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).progress().step() < 15;
  });
  // Started mid-run, it prints what is there, then what the rank writes, until core ends.
  const CommandResult follow = cluster.Loom({"logs", id, "--stage", "core", "--rank", "1", "--follow"});
  ASSERT_EQ(follow.exit_code, 0) << follow.err << cluster.Logs();
  EXPECT_NE(follow.out.find("fake rank 1: step 20 loss"), std::string::npos) << follow.out;
  EXPECT_EQ(follow.out, ReadAll(cluster.work_dir("w1") + "/" + id + "/core#1/rank1/rank.log"));
  PlanStatus status;
  ASSERT_TRUE(cluster.Status(id, &status));
  EXPECT_NE(status.jobs(0).state(), loom::v1::JOB_STATE_RUNNING);
}

TEST(History, TheBoundThinsOlderStepsEvenly) {
  Cluster cluster({.coordinator_args = {"--history-points", "8"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const CommandResult csv = cluster.Loom({"metrics", id, "--stage", "core", "--format", "csv"});
  ASSERT_EQ(csv.exit_code, 0) << csv.err;
  std::vector<int64_t> steps;
  for (const Row& r : ParseCsv(csv.out)) steps.push_back(r.step);
  // 20 steps in at most 8 points: every 4th step (the stride doubled twice), the last one kept.
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 8, 12, 16, 20})) << csv.out;
}

}  // namespace
}  // namespace loom::testing
