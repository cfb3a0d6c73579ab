#include "coordinator/discovery.h"

#include "nlohmann/json.hpp"

namespace loom::coordinator {

std::string DiscoveryJson(const std::string& coordinator_metrics, const loom::v1::ListWorkersResponse& workers) {
  nlohmann::json groups = nlohmann::json::array();
  groups.push_back({{"targets", {coordinator_metrics}}, {"labels", {{"role", "coordinator"}}}});
  for (const loom::v1::WorkerStatus& w : workers.workers()) {
    if (w.state() == loom::v1::WORKER_STATE_LOST || w.metrics_address().empty()) continue;
    groups.push_back({{"targets", {w.metrics_address()}},
                      {"labels", {{"role", "worker"}, {"worker", w.worker_id()}, {"host", w.host()}}}});
  }
  return groups.dump();
}

}  // namespace loom::coordinator
