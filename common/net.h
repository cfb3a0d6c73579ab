// Addresses: resolving "HOST:PORT" and finding which local address reaches a peer (the address a
// worker advertises by default: the one its host uses to talk to the coordinator).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace loom {

struct Ipv4Endpoint {
  uint32_t address = 0;  // network byte order
  uint16_t port = 0;     // host byte order
};

// Resolves "HOST:PORT" to IPv4 (numeric, or a name through getaddrinfo). INVALID_ARGUMENT names
// what is wrong.
absl::StatusOr<Ipv4Endpoint> ResolveIpv4(const std::string& host_port);

// The local IPv4 address the kernel would use to reach `host_port` (a UDP socket connected there,
// nothing sent), e.g. "10.0.0.7"; "127.0.0.1" for a loopback peer.
absl::StatusOr<std::string> LocalAddressToward(const std::string& host_port);

// True for "0.0.0.0", "0.0.0.0:N", "[::]:N", "::" and ":N" (every interface).
bool IsWildcardAddress(const std::string& address);

}  // namespace loom
