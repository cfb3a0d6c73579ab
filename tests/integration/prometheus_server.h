// A real Prometheus server (Debian's /usr/bin/prometheus) for integration tests: it scrapes the
// given targets every second, keeps its data in a directory of the test's, listens on a free
// loopback port and is killed when the object goes. Queried through its HTTP API.
//
//   loom::testing::PrometheusServer prometheus(cluster.dir(), {cluster.coordinator_metrics(), ...});
//   std::string body = prometheus.Get("/api/v1/query?query=" + UrlEncode("up"));
#pragma once

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/cluster_harness.h"

namespace loom::testing {

// `text` percent-encoded for a URL's query string (RFC 3986 unreserved characters kept).
inline std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

class PrometheusServer {
 public:
  // Writes <dir>/prometheus.yml (scrape and rule evaluation every second, one job `loom` with
  // `targets`, each "host:port") and starts the server. Its first scrape is queryable about 5–6 s
  // after it starts.
  PrometheusServer(const std::string& dir, const std::vector<std::string>& targets)
      : address_("127.0.0.1:" + std::to_string(FreePort())) {
    const std::string config = dir + "/prometheus.yml";
    std::ofstream out(config);
    out << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        << "scrape_configs:\n"
        << "  - job_name: loom\n"
        << "    static_configs:\n"
        << "      - targets: [";
    for (size_t i = 0; i < targets.size(); ++i) out << (i ? ", '" : "'") << targets[i] << "'";
    out << "]\n";
    out.close();
    process_ = std::make_unique<Process>(
        std::vector<std::string>{"/usr/bin/prometheus", "--config.file=" + config,
                                 "--storage.tsdb.path=" + dir + "/tsdb", "--web.listen-address=" + address_},
        dir + "/prometheus.log");
  }

  // host:port of its HTTP API.
  const std::string& address() const { return address_; }
  // GET <path> from its HTTP API: the body, or "" when it does not answer.
  std::string Get(const std::string& path) const { return HttpGet(address_, path); }
  std::string log() const { return process_->log(); }

 private:
  std::string address_;
  std::unique_ptr<Process> process_;
};

}  // namespace loom::testing
