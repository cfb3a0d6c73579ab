#include "common/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/net.h"

namespace loom {
namespace {

constexpr size_t kMaxRequestBytes = 8192;
constexpr int kReadTimeoutMs = 1000;

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    default: return "Error";
  }
}

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address, Routes routes) {
  absl::StatusOr<Ipv4Endpoint> endpoint = ResolveIpv4(address);
  if (!endpoint.ok()) return endpoint.status();
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = endpoint->address;
  addr.sin_port = htons(endpoint->port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, 64) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", error));
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string host = address.substr(0, address.rfind(':'));
  return std::unique_ptr<HttpServer>(
      new HttpServer(fd, absl::StrCat(host, ":", ntohs(addr.sin_port)), std::move(routes)));
}

HttpServer::HttpServer(int fd, std::string address, Routes routes)
    : fd_(fd), address_(std::move(address)), routes_(std::move(routes)) {
  thread_ = std::thread([this] { Serve(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  shutdown(fd_, SHUT_RDWR);  // wakes the poll below
  thread_.join();
  close(fd_);
}

void HttpServer::Serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) continue;
    const int client = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    timeval timeout{0, kReadTimeoutMs * 1000};
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    Answer(client);
    close(client);
  }
}

void HttpServer::Answer(int client) {
  std::string request;
  char buf[1024];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < kMaxRequestBytes) {
    const ssize_t n = recv(client, buf, sizeof buf, 0);
    if (n <= 0) return;  // closed, or silent past the timeout
    request.append(buf, static_cast<size_t>(n));
  }
  HttpResponse response{400, "text/plain; charset=utf-8", "bad request\n"};
  const size_t line_end = request.find("\r\n");
  const std::string line = request.substr(0, line_end == std::string::npos ? 0 : line_end);
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 != std::string::npos && sp2 > sp1) {
    const std::string method = line.substr(0, sp1);
    std::string path = line.substr(sp1 + 1, sp2 - sp1 - 1);
    path = path.substr(0, path.find('?'));
    if (method != "GET" && method != "HEAD") {
      response = {405, "text/plain; charset=utf-8", "only GET\n"};
    } else if (auto it = routes_.find(path); it != routes_.end()) {
      response = it->second();
    } else {
      std::string known;
      for (const auto& [p, handler] : routes_) known += " " + p;
      response = {404, "text/plain; charset=utf-8", absl::StrCat("not found; try", known, "\n")};
    }
    if (method == "HEAD") response.body.clear();
  }
  WriteAll(client, absl::StrCat("HTTP/1.1 ", response.status, " ", Reason(response.status),
                                "\r\nContent-Type: ", response.content_type,
                                "\r\nContent-Length: ", response.body.size(), "\r\nConnection: close\r\n\r\n",
                                response.body));
}

}  // namespace loom
