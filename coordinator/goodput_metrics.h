// The goodput ledgers on /metrics (coordinator/goodput.h):
//   loom_goodput_seconds_total{plan,stage,bucket}   counter: seconds of the job's wall time by bucket
//   loom_goodput_uncommitted_seconds{plan,stage}    gauge: step time not yet covered by a checkpoint
//   loom_goodput_ratio{plan}                        gauge: productive seconds over wall seconds, all
//                                                   the plan's jobs together
// Series of plans that ended more than kGoodputRetentionMs ago are removed.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/coordinator.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace loom::coordinator {

class GoodputMetrics {
 public:
  explicit GoodputMetrics(prometheus::Registry& registry);
  void Update(const std::vector<MetricsSnapshot::JobGoodput>& jobs);

 private:
  struct CounterSeries {
    prometheus::Counter* counter = nullptr;
    double seen = 0;
  };
  prometheus::Family<prometheus::Counter>& seconds_;
  prometheus::Family<prometheus::Gauge>& uncommitted_;
  prometheus::Family<prometheus::Gauge>& ratio_;
  std::map<std::pair<std::string, std::string>, std::map<std::string, CounterSeries>> counters_;  // by job, bucket
  std::map<std::pair<std::string, std::string>, prometheus::Gauge*> uncommitted_gauges_;          // by job
  std::map<std::string, prometheus::Gauge*> ratio_gauges_;                                        // by plan
};

}  // namespace loom::coordinator
