// CoordinatorMetrics: per-job series stay bounded, straggler series follow the flags, a lost
// worker keeps its last-heartbeat timestamp, and the build is labelled.
#include "coordinator/metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace loom::coordinator {
namespace {

std::string Scrape(CoordinatorMetrics& m) { return prometheus::TextSerializer().Serialize(m.registry()->Collect()); }

bool Has(const std::string& text, const std::string& series) { return text.find(series) != std::string::npos; }

MetricsSnapshot::Job Job(const std::string& plan, bool active, int64_t ended_ms) {
  MetricsSnapshot::Job j;
  j.plan_id = plan;
  j.stage = "core";
  j.state = active ? loom::v1::JOB_STATE_RUNNING : loom::v1::JOB_STATE_SUCCEEDED;
  j.attempt = 1;
  j.plan_active = active;
  j.plan_ended_ms = ended_ms;
  j.last_checkpoint_ms = 1'700'000'000'000;
  j.last_checkpoint_bytes = 4096;
  return j;
}

TEST(CoordinatorMetrics, JobSeriesOnlyForLivePlansAndTheFiftyThatEndedLast) {
  CoordinatorMetrics m;
  MetricsSnapshot s;
  s.jobs.push_back(Job("live", true, 0));
  for (int i = 0; i < 60; ++i) s.jobs.push_back(Job(absl::StrCat("done-", i), false, 1000 + i));
  m.Update(s);
  std::string text = Scrape(m);
  EXPECT_TRUE(Has(text, R"(loom_job_state{plan="live",stage="core",state="running"} 1)")) << text;
  // done-10 .. done-59 ended last; done-0 .. done-9 are gone.
  EXPECT_TRUE(Has(text, R"(loom_job_state{plan="done-10",stage="core",state="succeeded"} 1)")) << text;
  EXPECT_TRUE(Has(text, R"(loom_job_attempts_total{plan="done-59",stage="core"} 1)")) << text;
  EXPECT_FALSE(Has(text, R"(plan="done-9")")) << text;
  EXPECT_FALSE(Has(text, R"(plan="done-0")")) << text;
  EXPECT_TRUE(Has(text, R"(loom_job_last_checkpoint_timestamp_seconds{plan="live",stage="core"} 1700000000)")) << text;
  EXPECT_TRUE(Has(text, R"(loom_job_last_checkpoint_bytes{plan="live",stage="core"} 4096)")) << text;

  // A plan that ends later pushes the oldest shown one out.
  s.jobs.push_back(Job("done-60", false, 2000));
  m.Update(s);
  text = Scrape(m);
  EXPECT_FALSE(Has(text, R"(plan="done-10")")) << text;
  EXPECT_TRUE(Has(text, R"(loom_job_state{plan="done-60",stage="core",state="succeeded"} 1)")) << text;
}

TEST(CoordinatorMetrics, StragglerSeriesExistOnlyWhileFlagged) {
  CoordinatorMetrics m;
  MetricsSnapshot s;
  s.jobs.push_back(Job("p", true, 0));
  s.jobs[0].stragglers = {2};
  m.Update(s);
  EXPECT_TRUE(Has(Scrape(m), R"(loom_rank_straggler{plan="p",rank="2",stage="core"} 1)")) << Scrape(m);
  s.jobs[0].stragglers.clear();
  m.Update(s);
  EXPECT_FALSE(Has(Scrape(m), "loom_rank_straggler{")) << Scrape(m);
}

TEST(CoordinatorMetrics, ALostWorkerKeepsItsLastHeartbeatUntilForgotten) {
  CoordinatorMetrics m;
  MetricsSnapshot s;
  s.heartbeat_age_seconds["w1"] = 0.5;
  s.last_heartbeat_seconds = {{"w1", 1700000000.5}, {"w2", 1699999990}};  // w2 is lost: no age
  m.Update(s);
  std::string text = Scrape(m);
  EXPECT_TRUE(Has(text, R"(loom_worker_last_heartbeat_timestamp_seconds{worker="w2"} 1699999990)")) << text;
  EXPECT_FALSE(Has(text, R"(loom_worker_heartbeat_age_seconds{worker="w2"})")) << text;
  EXPECT_TRUE(Has(text, R"(loom_build_info{version=")")) << text;
  s.last_heartbeat_seconds.erase("w2");
  m.Update(s);
  EXPECT_FALSE(Has(Scrape(m), R"(worker="w2")")) << Scrape(m);
}

}  // namespace
}  // namespace loom::coordinator
