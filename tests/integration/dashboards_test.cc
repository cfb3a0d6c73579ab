// The Grafana dashboards of dashboards/ against a real run: a real coordinator and three real
// workers train a short real plan (loom-rank on prepared data, with evaluation and math accuracy)
// while a real Prometheus server scrapes them all; one worker is killed mid-run so that the job
// fails over (a failure, a recovery and rank exits happen). Then every PromQL expression of both
// dashboards, template variables filled in with the run's plan and stage, runs as a range query
// (as Grafana sends it) against that Prometheus: each must return series, and every loom_* metric
// it names must be one the run exported. The JSON is checked for what Grafana needs: schema
// version, unique panel ids, a templated Prometheus data source on every panel and query, a unit
// and a description on every panel, and the provisioning files. The run's MFU must be in (0, 1).
#include <ctime>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"
#include "tests/integration/prometheus_server.h"

namespace loom::testing {
namespace {

using nlohmann::json;

json Load(const std::string& relative) {
  const json j = json::parse(ReadAll(SourcePath(relative)), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << relative << " is not valid JSON";
  return j;
}

// Every panel, those inside rows included.
std::vector<json> Panels(const json& dashboard) {
  std::vector<json> out;
  for (const json& p : dashboard.value("panels", json::array())) {
    out.push_back(p);
    for (const json& inner : p.value("panels", json::array())) out.push_back(inner);
  }
  return out;
}

bool IsTemplatedDataSource(const json& ds) {
  return ds.is_object() && ds.value("uid", "") == "${datasource}" && ds.value("type", "") == "prometheus";
}

// An expression of a dashboard (`where` says which panel or variable), and for a variable's
// label_values(SELECTOR, LABEL) the label its values come from.
struct Expression {
  std::string where;
  std::string expr;
  std::string label;
};

// Checks what Grafana needs and returns the dashboard's expressions.
std::vector<Expression> CheckDashboard(const std::string& relative, const std::set<std::string>& variables) {
  const json d = Load(relative);
  EXPECT_GE(d.value("schemaVersion", 0), 36) << relative;
  EXPECT_FALSE(d.value("uid", "").empty()) << relative << ": a uid keeps links stable";
  EXPECT_FALSE(d.value("title", "").empty()) << relative;
  std::vector<Expression> out;
  std::set<std::string> seen_variables;
  for (const json& v : d["templating"]["list"]) {
    const std::string name = v.value("name", "");
    seen_variables.insert(name);
    if (name == "datasource") {
      EXPECT_EQ(v.value("type", ""), "datasource") << relative;
      EXPECT_EQ(v.value("query", ""), "prometheus") << relative;
      continue;
    }
    EXPECT_EQ(v.value("type", ""), "query") << relative << " variable " << name;
    EXPECT_TRUE(IsTemplatedDataSource(v["datasource"])) << relative << " variable " << name;
    const std::string definition = v.value("definition", "");
    std::smatch m;
    const std::regex label_values(R"(^label_values\((.*),\s*(\w+)\)$)");
    if (std::regex_match(definition, m, label_values)) {
      out.push_back({relative + " variable " + name, m[1], m[2]});
    } else {
      ADD_FAILURE() << relative << " variable " << name << ": expected label_values(...), got " << definition;
    }
  }
  EXPECT_EQ(seen_variables, variables) << relative;
  std::set<int> ids;
  int panels = 0;
  for (const json& p : Panels(d)) {
    const std::string title = relative + " panel \"" + p.value("title", "") + "\"";
    EXPECT_TRUE(p.contains("id") && p["id"].is_number_integer()) << title;
    EXPECT_TRUE(ids.insert(p.value("id", -1)).second) << title << ": id " << p.value("id", -1) << " is not unique";
    EXPECT_TRUE(p.contains("gridPos")) << title;
    if (p.value("type", "") == "row") continue;
    ++panels;
    EXPECT_FALSE(p.value("title", "").empty()) << title;
    EXPECT_FALSE(p.value("description", "").empty()) << title << " has no description";
    EXPECT_FALSE(p["fieldConfig"]["defaults"].value("unit", "").empty()) << title << " has no unit";
    EXPECT_TRUE(IsTemplatedDataSource(p["datasource"])) << title << ": datasource must be ${datasource}";
    EXPECT_FALSE(p.value("targets", json::array()).empty()) << title << " has no query";
    for (const json& t : p.value("targets", json::array())) {
      EXPECT_TRUE(IsTemplatedDataSource(t["datasource"])) << title << " target " << t.value("refId", "");
      EXPECT_FALSE(t.value("expr", "").empty()) << title << " target " << t.value("refId", "");
      out.push_back({title + " target " + t.value("refId", ""), t.value("expr", ""), ""});
    }
  }
  EXPECT_GT(panels, 10) << relative;
  return out;
}

// `expr` with the dashboard's variables filled in, as Grafana sends it (1 s scrapes: a
// $__rate_interval of 4 scrapes).
std::string Fill(std::string expr, const std::string& plan, const std::string& stage) {
  const std::vector<std::pair<std::string, std::string>> values = {
      {"$__rate_interval", "4s"}, {"$__interval", "1s"}, {"$__range", "60s"}, {"${plan}", plan},
      {"$plan", plan},            {"${stage}", stage},   {"$stage", stage}};
  for (const auto& [name, value] : values) {
    for (size_t at; (at = expr.find(name)) != std::string::npos;) expr.replace(at, name.size(), value);
  }
  return expr;
}

// Metric names a run exported, from Prometheus' own list of the names it stored.
std::set<std::string> StoredNames(const PrometheusServer& prometheus) {
  const json j = json::parse(prometheus.Get("/api/v1/label/__name__/values"), nullptr, false);
  std::set<std::string> out;
  if (!j.is_discarded() && j.value("status", "") == "success") {
    for (const json& n : j["data"]) out.insert(n.get<std::string>());
  }
  return out;
}

// The series a range query over [start, now] returns (empty on any error).
json RangeQuery(const PrometheusServer& prometheus, const std::string& expr, std::time_t start) {
  const std::string path = "/api/v1/query_range?query=" + UrlEncode(expr) + "&start=" + std::to_string(start) +
                           "&end=" + std::to_string(std::time(nullptr)) + "&step=1";
  const json j = json::parse(prometheus.Get(path), nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") return json::array();
  return j["data"]["result"];
}

TEST(Dashboards, ProvisioningFilesNameTheDashboardsAndAPrometheusDataSource) {
  const std::string datasources = ReadAll(SourcePath("dashboards/provisioning/datasources/loom.yaml"));
  const std::string dashboards = ReadAll(SourcePath("dashboards/provisioning/dashboards/loom.yaml"));
  EXPECT_NE(datasources.find("apiVersion: 1"), std::string::npos);
  EXPECT_NE(datasources.find("type: prometheus"), std::string::npos);
  EXPECT_NE(dashboards.find("apiVersion: 1"), std::string::npos);
  EXPECT_NE(dashboards.find("type: file"), std::string::npos);
  EXPECT_NE(dashboards.find("path: "), std::string::npos);
}

TEST(Dashboards, EveryExpressionReturnsSeriesFromARealRun) {
  const std::vector<Expression> cluster_view = CheckDashboard("dashboards/cluster.json", {"datasource"});
  const std::vector<Expression> training_view =
      CheckDashboard("dashboards/training.json", {"datasource", "plan", "stage"});
  ASSERT_FALSE(::testing::Test::HasFailure());
  std::vector<Expression> expressions = cluster_view;
  expressions.insert(expressions.end(), training_view.begin(), training_view.end());

  const std::string prepared = PrepareData("dashboards", "math,sft_math", 512);
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank")});
  cluster.StartCoordinator();
  for (const char* w : {"w1", "w2", "w3"}) cluster.StartWorker(w, 1);
  PrometheusServer prometheus(cluster.dir(), {cluster.coordinator_metrics(), cluster.worker_metrics("w1"),
                                              cluster.worker_metrics("w2"), cluster.worker_metrics("w3")});
  const std::time_t start = std::time(nullptr) - 5;
  // Long enough never to end during the test; evaluation (loss and math accuracy) every 10 steps.
  const std::string plan_path = cluster.dir() + "/dash.yaml";
  std::ofstream(plan_path) << "name: dash\nseed: 5\n"
                           << "model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}\n"
                           << "data: {dir: " << prepared << "}\n" << R"(defaults:
  parallel: {dp: 2, micro_batch_size: 1}
  optimizer: {lr: 3e-3}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 256}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: 10}
stages:
  - name: core
    kind: pretrain
    tokens: 4Mi
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
    eval: {every_steps: 10, sets: [math], max_tokens: 512, math_accuracy: true, math_problems: 2, math_max_new_tokens: 8}
)";
  const std::string plan = cluster.Submit(plan_path);
  ASSERT_FALSE(plan.empty());

  // Train until Prometheus has seen the job's series, then kill the worker of rank 1: the job
  // fails over to the spare worker (a worker_lost failure, rank exits, a second attempt).
  loom::v1::PlanStatus s = cluster.WaitForPlan(plan, [](const loom::v1::PlanStatus& s) {
    return s.jobs(0).progress().step() >= 20 && s.jobs(0).rank_workers_size() == 2;
  });
  ASSERT_EQ(s.jobs(0).rank_workers_size(), 2);
  const auto seen = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < seen &&
         RangeQuery(prometheus, "loom_eval_accuracy", start).empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  cluster.KillWorker(s.jobs(0).rank_workers(1));
  cluster.WaitForPlan(plan, [](const loom::v1::PlanStatus& s) {
    return s.jobs(0).attempt() == 2 && s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING &&
           s.jobs(0).progress().step() >= 25;
  });

  // Every expression, until each has returned series (Prometheus scrapes every second).
  std::map<std::string, json> results;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until && results.size() < expressions.size()) {
    for (const Expression& e : expressions) {
      if (results.contains(e.where)) continue;
      json r = RangeQuery(prometheus, Fill(e.expr, plan, "core"), start);
      if (!r.empty()) results[e.where] = std::move(r);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  }
  const std::set<std::string> stored = StoredNames(prometheus);
  ASSERT_TRUE(stored.contains("loom_train_loss")) << prometheus.log();
  const std::regex metric_name(R"(\bloom_[a-z0-9_]+)");
  for (const Expression& e : expressions) {
    const std::string filled = Fill(e.expr, plan, "core");
    EXPECT_EQ(filled.find('$'), std::string::npos) << e.where << ": a variable the test does not know: " << filled;
    int names = 0;
    for (auto it = std::sregex_iterator(e.expr.begin(), e.expr.end(), metric_name); it != std::sregex_iterator();
         ++it, ++names) {
      EXPECT_TRUE(stored.contains(it->str())) << e.where << " names " << it->str() << ", which Loom did not export";
    }
    EXPECT_GT(names, 0) << e.where << " names no Loom metric: " << e.expr;
    ASSERT_TRUE(results.contains(e.where)) << e.where << " returned no series: " << filled << "\n" << cluster.Logs();
    if (!e.label.empty()) {
      std::set<std::string> values;
      for (const json& series : results[e.where]) values.insert(series["metric"].value(e.label, ""));
      // The plan variable must offer the run's plan, the stage variable its stage.
      EXPECT_TRUE(values.contains(e.label == "plan" ? plan : "core")) << e.where << ": " << results[e.where].dump();
    }
  }
  // The run's MFU (loom-rank's model FLOPs over the workers' measured peaks): a fraction above 0.
  const json mfu = RangeQuery(prometheus, "loom_train_mfu_ratio{plan=\"" + plan + "\"}", start);
  EXPECT_FALSE(mfu.empty()) << "no loom_train_mfu_ratio";
  double lowest = 1, highest = 0;
  for (const json& series : mfu) {
    for (const json& point : series["values"]) {
      const double value = std::stod(point[1].get<std::string>());
      EXPECT_GT(value, 0) << series.dump();
      EXPECT_LT(value, 1) << series.dump();
      lowest = std::min(lowest, value);
      highest = std::max(highest, value);
    }
  }
  std::printf("MFU of the run: %.4f to %.4f\n", lowest, highest);
  // The failure shows: a second attempt, and a worker_lost failure.
  bool lost = false;
  for (const json& series : RangeQuery(prometheus, "loom_attempt_failures_total", start)) {
    lost |= series["metric"].value("cause", "") == "worker_lost";
  }
  EXPECT_TRUE(lost) << "no worker_lost failure in loom_attempt_failures_total";
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(std::filesystem::path(prepared).parent_path());
}

}  // namespace
}  // namespace loom::testing
