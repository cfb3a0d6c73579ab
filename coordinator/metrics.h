// The coordinator's Prometheus metrics (names in README.md), refreshed from a
// Coordinator::Metrics() snapshot.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "coordinator/coordinator.h"
#include "coordinator/goodput_metrics.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace loom::coordinator {

class CoordinatorMetrics {
 public:
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
  prometheus::Gauge& pending_jobs_;
  prometheus::Counter& checkpoints_;
  prometheus::Counter& checkpoints_bad_;
  prometheus::Counter& checkpoints_deleted_;
  prometheus::Counter& checkpoint_save_failures_;
  std::map<std::string, int> attempts_seen_;
  std::map<std::string, prometheus::Gauge*> heartbeat_gauges_;
  int64_t checkpoints_seen_ = 0;
  int64_t checkpoints_bad_seen_ = 0;
  int64_t checkpoints_deleted_seen_ = 0;
  int64_t checkpoint_save_failures_seen_ = 0;
  std::map<std::pair<std::string, std::string>, int64_t> failures_seen_;
  GoodputMetrics goodput_;
};

}  // namespace loom::coordinator
