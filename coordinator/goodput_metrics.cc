#include "coordinator/goodput_metrics.h"

#include <set>

namespace loom::coordinator {

GoodputMetrics::GoodputMetrics(prometheus::Registry& registry)
    : seconds_(prometheus::BuildCounter()
                   .Name("loom_goodput_seconds_total")
                   .Help("Seconds of each job's wall time by where they went (bucket: queued, "
                         "placement_and_rendezvous, startup_and_load, data_wait, productive, communication, "
                         "checkpoint_save, evaluation, failure_detection, recovery, wasted_progress, elastic_reshape, "
                         "other)")
                   .Register(registry)),
      uncommitted_(prometheus::BuildGauge()
                       .Name("loom_goodput_uncommitted_seconds")
                       .Help("Step time since the job's last committed checkpoint: productive when the next one "
                             "commits, wasted progress if the attempt fails first")
                       .Register(registry)),
      ratio_(prometheus::BuildGauge()
                 .Name("loom_goodput_ratio")
                 .Help("Productive seconds over wall seconds of the plan's jobs so far (0 to 1)")
                 .Register(registry)) {}

void GoodputMetrics::Update(const std::vector<MetricsSnapshot::JobGoodput>& jobs) {
  std::set<std::pair<std::string, std::string>> live_jobs;
  std::map<std::string, std::pair<double, double>> plans;  // productive, wall
  for (const MetricsSnapshot::JobGoodput& job : jobs) {
    const std::pair<std::string, std::string> key{job.plan_id, job.stage};
    live_jobs.insert(key);
    std::map<std::string, CounterSeries>& buckets = counters_[key];
    for (const auto& [bucket, seconds] : job.goodput.seconds()) {
      CounterSeries& series = buckets[bucket];
      if (series.counter == nullptr) {
        series.counter = &seconds_.Add({{"plan", job.plan_id}, {"stage", job.stage}, {"bucket", bucket}});
      }
      if (seconds > series.seen) {  // the ledger's buckets only grow
        series.counter->Increment(seconds - series.seen);
        series.seen = seconds;
      }
    }
    prometheus::Gauge*& gauge = uncommitted_gauges_[key];
    if (gauge == nullptr) gauge = &uncommitted_.Add({{"plan", job.plan_id}, {"stage", job.stage}});
    gauge->Set(job.goodput.uncommitted_seconds());
    auto productive = job.goodput.seconds().find("productive");
    std::pair<double, double>& plan = plans[job.plan_id];
    plan.first += productive == job.goodput.seconds().end() ? 0 : productive->second;
    plan.second += job.goodput.wall_seconds();
  }
  for (auto it = counters_.begin(); it != counters_.end();) {
    if (live_jobs.contains(it->first)) {
      ++it;
      continue;
    }
    for (auto& [bucket, series] : it->second) seconds_.Remove(series.counter);
    uncommitted_.Remove(uncommitted_gauges_[it->first]);
    uncommitted_gauges_.erase(it->first);
    it = counters_.erase(it);
  }
  for (auto it = ratio_gauges_.begin(); it != ratio_gauges_.end();) {
    if (plans.contains(it->first)) {
      ++it;
    } else {
      ratio_.Remove(it->second);
      it = ratio_gauges_.erase(it);
    }
  }
  for (const auto& [plan, totals] : plans) {
    prometheus::Gauge*& gauge = ratio_gauges_[plan];
    if (gauge == nullptr) gauge = &ratio_.Add({{"plan", plan}});
    gauge->Set(totals.second > 0 ? totals.first / totals.second : 0);
  }
}

}  // namespace loom::coordinator
