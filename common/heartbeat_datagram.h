// Worker heartbeats as UDP datagrams. A coordinator with thousands of workers spends most of its
// time on heartbeats when each is a gRPC message on its worker's stream (one read, one window
// update and a thread hand-off per beat; bench/README.md). A datagram is one fixed-size read,
// taken in batches: the stream then carries a full heartbeat (the ranks a worker runs) only now
// and then, and the datagrams keep the worker alive in between.
//
// A datagram says "connection C is alive" with the 16-byte key the coordinator gave that
// connection when it registered (RegisterAck), so a datagram from anyone else, or for an old
// connection, changes nothing. Datagrams are untrusted input: anything but exactly this layout is
// counted and dropped.
//
//   bytes 0-3   "LMHB"
//   byte  4     version (1), bytes 5-7 zero
//   bytes 8-15  the connection id, big-endian
//   bytes 16-31 the key
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"

namespace loom {

inline constexpr size_t kHeartbeatDatagramSize = 32;

struct HeartbeatDatagram {
  int64_t connection = 0;
  std::array<uint8_t, 16> key{};
};

std::string EncodeHeartbeatDatagram(const HeartbeatDatagram& beat);
// Nothing unless `bytes` is exactly a version-1 heartbeat.
std::optional<HeartbeatDatagram> DecodeHeartbeatDatagram(std::string_view bytes);

// 16 random bytes (OpenSSL's generator), for a connection's key.
std::array<uint8_t, 16> NewHeartbeatKey();

// Sends heartbeats to one coordinator over one UDP socket.
class HeartbeatSender {
 public:
  // `host` (a name or an IPv4 address) and the coordinator's UDP `port`.
  static absl::StatusOr<std::unique_ptr<HeartbeatSender>> Open(const std::string& host, int port);
  ~HeartbeatSender();
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;
  // False when the kernel refused it (the beat is lost, as a datagram may be anyway).
  bool Send(const HeartbeatDatagram& beat);

 private:
  explicit HeartbeatSender(int fd) : fd_(fd) {}
  int fd_;
};

// Receives heartbeats on a UDP address on its own thread, in batches (recvmmsg), and hands each
// well-formed one to `on_beat`; stops (and joins) when destroyed.
class HeartbeatReceiver {
 public:
  using OnBeat = std::function<void(const HeartbeatDatagram&)>;
  // `host` an IPv4 address (or 0.0.0.0); `port` 0 picks a free one.
  static absl::StatusOr<std::unique_ptr<HeartbeatReceiver>> Start(const std::string& host, int port,
                                                                  OnBeat on_beat);
  ~HeartbeatReceiver();
  HeartbeatReceiver(const HeartbeatReceiver&) = delete;
  HeartbeatReceiver& operator=(const HeartbeatReceiver&) = delete;

  int port() const { return port_; }
  uint64_t received() const { return received_.load(); }
  uint64_t rejected() const { return rejected_.load(); }  // malformed datagrams

 private:
  HeartbeatReceiver(int fd, int port, OnBeat on_beat);
  void Loop();

  const int fd_;
  const int port_;
  OnBeat on_beat_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> received_{0}, rejected_{0};
  std::thread thread_;
};

}  // namespace loom
