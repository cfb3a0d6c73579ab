// A small HTTP/1.1 server for GET endpoints that ops tools poll: Prometheus' /metrics and its HTTP
// service discovery. One thread accepts and answers connections one at a time, each bounded by a
// short read timeout and a request-size cap, so a slow or hostile client delays a scrape by at
// most a second and cannot grow memory. Every response closes its connection.
//
//   HttpServer::Routes routes;
//   routes["/metrics"] = [&] { return HttpResponse{200, "text/plain; version=0.0.4", Text()}; };
//   absl::StatusOr<std::unique_ptr<HttpServer>> server = HttpServer::Start("127.0.0.1:0", routes);
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace loom {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

class HttpServer {
 public:
  // Path (without the query string) -> handler. Handlers run on the server's thread.
  using Routes = std::map<std::string, std::function<HttpResponse()>>;

  // Binds `address` ("HOST:PORT", an IPv4 address or a name that resolves to one; port 0 picks a
  // free port) and starts serving. UNAVAILABLE names the address when it cannot be bound,
  // INVALID_ARGUMENT when it is not HOST:PORT.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address, Routes routes);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // "HOST:PORT" as bound.
  const std::string& address() const { return address_; }

 private:
  HttpServer(int fd, std::string address, Routes routes);
  void Serve();
  void Answer(int client);

  const int fd_;
  const std::string address_;
  const Routes routes_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace loom
