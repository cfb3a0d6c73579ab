// Serving /metrics (Prometheus text format) from a registry, plus any extra GET endpoints the
// process wants on the same port (the coordinator's service discovery), over common/http_server.h.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/http_server.h"
#include "prometheus/registry.h"

namespace loom {

struct MetricsServer {
  std::unique_ptr<HttpServer> http;
  // "host:port" as bound.
  std::string address;
};

// Starts an HTTP server on `address` ("127.0.0.1:7071", port 0 for any free one) serving
// `registry` at /metrics and `extra` routes beside it. UNAVAILABLE names the address when it
// cannot be bound.
absl::StatusOr<MetricsServer> StartMetricsServer(const std::string& address,
                                                 const std::shared_ptr<prometheus::Registry>& registry,
                                                 HttpServer::Routes extra = {});

}  // namespace loom
