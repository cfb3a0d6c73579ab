#include "common/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom {

absl::StatusOr<Ipv4Endpoint> ResolveIpv4(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 || !absl::SimpleAtoi(host_port.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", host_port, "' is not HOST:PORT (e.g. 127.0.0.1:7071; port 0 picks a free one)"));
  }
  const std::string host = host_port.substr(0, colon);
  Ipv4Endpoint endpoint;
  endpoint.port = static_cast<uint16_t>(port);
  in_addr numeric{};
  if (inet_pton(AF_INET, host.c_str(), &numeric) == 1) {
    endpoint.address = numeric.s_addr;
    return endpoint;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve host '", host, "' of '", host_port, "': ", gai_strerror(rc)));
  }
  endpoint.address = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr.s_addr;
  freeaddrinfo(found);
  return endpoint;
}

absl::StatusOr<std::string> LocalAddressToward(const std::string& host_port) {
  absl::StatusOr<Ipv4Endpoint> peer = ResolveIpv4(host_port);
  if (!peer.ok()) return peer.status();
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = peer->address;
  addr.sin_port = htons(peer->port == 0 ? 9 : peer->port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("no route to ", host_port, ": ", error));
  }
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  return std::string(text);
}

bool IsWildcardAddress(const std::string& address) {
  return address == "0.0.0.0" || address == "::" || absl::StartsWith(address, "0.0.0.0:") ||
         absl::StartsWith(address, "[::]:") || absl::StartsWith(address, ":");
}

}  // namespace loom
