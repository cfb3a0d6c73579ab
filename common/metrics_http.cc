#include "common/metrics_http.h"

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace loom {

absl::StatusOr<MetricsServer> StartMetricsServer(const std::string& address,
                                                 const std::shared_ptr<prometheus::Registry>& registry,
                                                 HttpServer::Routes extra) {
  HttpServer::Routes routes = std::move(extra);
  routes["/metrics"] = [registry] {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                        prometheus::TextSerializer().Serialize(registry->Collect())};
  };
  absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(address, std::move(routes));
  if (!http.ok()) {
    return absl::Status(http.status().code(),
                        absl::StrCat("cannot serve /metrics: ", http.status().message()));
  }
  MetricsServer server;
  server.address = (*http)->address();
  server.http = std::move(*http);
  return server;
}

}  // namespace loom
