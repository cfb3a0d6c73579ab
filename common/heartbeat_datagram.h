// Worker heartbeats as UDP datagrams. A coordinator with thousands of workers spends most of its
// time on heartbeats when each is a gRPC message on its worker's stream (one read, one window
// update and a thread hand-off per beat; bench/README.md). A datagram is one fixed-size read,
// taken in batches: the stream then carries a full heartbeat (the ranks a worker runs) only now
// and then, and the datagrams keep the worker alive in between.
//
// A datagram says "connection C is alive", and proves it came from the worker of C with a MAC
// under the 32-byte key the coordinator gave that connection when it registered (RegisterAck,
// inside the connection's gRPC stream, so under TLS where TLS is on). The key itself never travels
// in a datagram, so someone who sees datagrams on the wire cannot make new ones; and each carries a
// sequence number, strictly increasing per connection, which the coordinator accepts only above the
// last one it accepted, so a datagram seen on the wire cannot be replayed either. Datagrams are
// untrusted input: anything but exactly this layout is counted and dropped (DecodeHeartbeatDatagram
// checks only the layout; the coordinator, which holds the key, checks the MAC and the sequence).
//
// Version 2, 40 bytes:
//   bytes 0-3    "LMHB"
//   byte  4      version (2), bytes 5-7 zero
//   bytes 8-15   the connection id, big-endian
//   bytes 16-23  the sequence number, big-endian: 1 for a connection's first datagram, then +1
//   bytes 24-39  HMAC-SHA256(key, bytes 0-23), its first 16 bytes
//
// Version 1 (32 bytes: the header, then the 16-byte key in clear) is refused as malformed. The key
// length tells the versions apart before any datagram is sent: a worker sends datagrams only when
// its RegisterAck carries a key of kHeartbeatKeySize bytes, and a version-1 worker only when it
// carries 16 bytes; otherwise each heartbeats on its gRPC stream, so a worker and a coordinator of
// different versions still work together (at the stream heartbeats' cost).
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

#include <openssl/types.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace loom {

inline constexpr size_t kHeartbeatKeySize = 32;
inline constexpr size_t kHeartbeatMacSize = 16;
inline constexpr size_t kHeartbeatDatagramSize = 40;

// A connection's key (HMAC-SHA256).
using HeartbeatKey = std::array<uint8_t, kHeartbeatKeySize>;

struct HeartbeatDatagram {
  int64_t connection = 0;
  uint64_t sequence = 0;
  std::array<uint8_t, kHeartbeatMacSize> mac{};
};

// The datagram of `connection` numbered `sequence`, with its MAC under `key` (the sender's side).
HeartbeatDatagram SignedHeartbeat(int64_t connection, uint64_t sequence, const HeartbeatKey& key);
// True when `beat`'s MAC is the one `key` gives (compared in constant time). The receiver's side;
// it says nothing about the sequence, which only the receiver's state can judge.
bool VerifyHeartbeatMac(const HeartbeatDatagram& beat, const HeartbeatKey& key);

// The bytes of `beat`, as they are (the MAC is not computed here).
std::string EncodeHeartbeatDatagram(const HeartbeatDatagram& beat);
// Nothing unless `bytes` has exactly the version-2 layout. Checks no MAC: VerifyHeartbeatMac.
std::optional<HeartbeatDatagram> DecodeHeartbeatDatagram(std::string_view bytes);

// kHeartbeatKeySize random bytes (OpenSSL's generator), for a connection's key.
HeartbeatKey NewHeartbeatKey();

// SignedHeartbeat and VerifyHeartbeatMac for one key, keyed once: for a receiver that checks every
// datagram of a connection. HMAC() from scratch sets up the digest and the key each time (about
// 1.2 us in a tight loop here); a keyed context only restarts (about 0.24 us). Thread-safe. Gives
// the same MACs as the functions above (tests/unit/common/heartbeat_datagram_test.cc).
class HeartbeatMac {
 public:
  explicit HeartbeatMac(const HeartbeatKey& key);
  ~HeartbeatMac();
  HeartbeatMac(const HeartbeatMac&) = delete;
  HeartbeatMac& operator=(const HeartbeatMac&) = delete;

  HeartbeatDatagram Sign(int64_t connection, uint64_t sequence);
  bool Verify(const HeartbeatDatagram& beat);

 private:
  std::array<uint8_t, kHeartbeatMacSize> MacOf(int64_t connection, uint64_t sequence);

  const HeartbeatKey key_;
  absl::Mutex mu_;
  // Null where OpenSSL could not make it: then HMAC() from scratch, with key_.
  EVP_MAC_CTX* context_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// Sends heartbeats to one coordinator over one UDP socket.
class HeartbeatSender {
 public:
  // `host` (a name or an IPv4 address) and the coordinator's UDP `port`.
  static absl::StatusOr<std::unique_ptr<HeartbeatSender>> Open(const std::string& host, int port);
  ~HeartbeatSender();
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;
  // Sends `beat` as it is (SignedHeartbeat makes one). False when the kernel refused it (the beat
  // is lost, as a datagram may be anyway).
  bool Send(const HeartbeatDatagram& beat);

 private:
  explicit HeartbeatSender(int fd) : fd_(fd) {}
  int fd_;
};

// Receives heartbeats on a UDP address on its own thread, in batches (recvmmsg), and hands each
// well-formed one to `on_beat` (which checks its MAC and sequence); stops (and joins) when
// destroyed.
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
