#include "common/metrics_http.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace loom {

absl::StatusOr<MetricsServer> StartMetricsServer(const std::string& address,
                                                 const std::shared_ptr<prometheus::Registry>& registry) {
  MetricsServer server;
  try {
    // One worker thread is plenty for a scrape every few seconds.
    server.exposer = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve /metrics on ", address, ": ", e.what()));
  }
  server.exposer->RegisterCollectable(registry);
  const std::vector<int> ports = server.exposer->GetListeningPorts();
  const size_t colon = address.rfind(':');
  const std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  server.address = ports.empty() ? address : absl::StrCat(host, ":", ports.front());
  return server;
}

}  // namespace loom
