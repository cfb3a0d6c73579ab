// The coordinator's Prometheus metrics (names in README.md), refreshed from a
// Coordinator::Metrics() snapshot.
//
// Per-job series (loom_job_state, loom_job_attempts_total, loom_job_last_checkpoint_*) exist
// for the jobs of live plans and of the kRecentEndedPlans plans that ended last; older
// ones are removed, so a long-lived coordinator's series stay bounded.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/coordinator.h"
#include "coordinator/goodput_metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace loom::coordinator {

class CoordinatorMetrics {
 public:
  // Ended plans whose jobs keep their series.
  static constexpr size_t kRecentEndedPlans = 50;
  CoordinatorMetrics();
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  void Update(const MetricsSnapshot& snapshot);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& job_state_;
  prometheus::Family<prometheus::Counter>& job_attempts_;
  prometheus::Family<prometheus::Gauge>& workers_;
  prometheus::Family<prometheus::Gauge>& heartbeat_age_;
  prometheus::Family<prometheus::Gauge>& plans_;
  prometheus::Family<prometheus::Counter>& attempt_failures_;
  prometheus::Family<prometheus::Counter>& fenced_reports_;
  prometheus::Family<prometheus::Counter>& dropped_datagrams_;
  prometheus::Family<prometheus::Gauge>& straggler_;
  prometheus::Family<prometheus::Gauge>& last_heartbeat_;
  prometheus::Family<prometheus::Gauge>& last_checkpoint_;
  prometheus::Family<prometheus::Gauge>& last_checkpoint_bytes_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Gauge& pending_jobs_;
  prometheus::Counter& checkpoints_;
  prometheus::Counter& checkpoints_bad_;
  prometheus::Counter& checkpoints_deleted_;
  prometheus::Counter& checkpoint_save_failures_;
  // The series of one job, by "<plan>/<stage>", removed together when it is no longer shown.
  struct JobSeries {
    std::vector<prometheus::Gauge*> states;
    prometheus::Counter* attempts = nullptr;
    int attempts_seen = 0;
    prometheus::Gauge* last_checkpoint = nullptr;
    prometheus::Gauge* last_checkpoint_bytes = nullptr;
  };
  std::map<std::string, JobSeries> job_series_;
  std::map<std::string, prometheus::Gauge*> heartbeat_gauges_;
  std::map<std::string, prometheus::Gauge*> last_heartbeat_gauges_;
  // loom_rank_straggler series, by "<plan>/<stage>/<rank>": only ranks flagged now.
  std::map<std::string, prometheus::Gauge*> straggler_gauges_;
  int64_t checkpoints_seen_ = 0;
  int64_t checkpoints_bad_seen_ = 0;
  int64_t checkpoints_deleted_seen_ = 0;
  int64_t checkpoint_save_failures_seen_ = 0;
  std::map<std::pair<std::string, std::string>, int64_t> failures_seen_;
  std::map<std::string, int64_t> fenced_seen_;
  std::map<std::string, int64_t> dropped_datagrams_seen_;
  GoodputMetrics goodput_;
};

}  // namespace loom::coordinator
