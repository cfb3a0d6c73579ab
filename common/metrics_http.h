// Serving /metrics: prometheus-cpp's Exposer with its exception turned into a Status, and the
// port it bound (for "host:0", which picks a free port).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace loom {

struct MetricsServer {
  std::unique_ptr<prometheus::Exposer> exposer;
  // "host:port" as bound.
  std::string address;
};

// Starts an HTTP server on `address` ("127.0.0.1:9400", port 0 for any free one) serving
// `registry` at /metrics. UNAVAILABLE names the address when it cannot be bound.
absl::StatusOr<MetricsServer> StartMetricsServer(const std::string& address,
                                                 const std::shared_ptr<prometheus::Registry>& registry);

}  // namespace loom
