// Prometheus HTTP service discovery (`http_sd_configs`): the coordinator's own /metrics and every
// live worker's, as the JSON list of target groups Prometheus polls. Labels: `role`
// (coordinator or worker), and for workers `worker` (its id) and `host` (its host name). A lost
// worker drops out; Prometheus stops scraping it at its next refresh.
#pragma once

#include <string>

#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

// `coordinator_metrics` is the address Prometheus dials for the coordinator (its advertised
// host and its metrics port).
std::string DiscoveryJson(const std::string& coordinator_metrics, const loom::v1::ListWorkersResponse& workers);

}  // namespace loom::coordinator
