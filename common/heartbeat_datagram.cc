#include "common/heartbeat_datagram.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/net.h"

namespace loom {
namespace {

constexpr char kMagic[4] = {'L', 'M', 'H', 'B'};
constexpr uint8_t kVersion = 2;
// Bytes 0-23: what the MAC covers.
constexpr size_t kHeaderSize = kHeartbeatDatagramSize - kHeartbeatMacSize;
using Header = std::array<uint8_t, kHeaderSize>;

void PutBigEndian(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>((v >> (56 - 8 * i)) & 0xff);
}

uint64_t GetBigEndian(const char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

Header HeaderOf(int64_t connection, uint64_t sequence) {
  Header h{};
  std::memcpy(h.data(), kMagic, 4);
  h[4] = kVersion;
  PutBigEndian(static_cast<uint64_t>(connection), h.data() + 8);
  PutBigEndian(sequence, h.data() + 16);
  return h;
}

// HMAC-SHA256 of the header under `key`, its first kHeartbeatMacSize bytes.
std::array<uint8_t, kHeartbeatMacSize> MacOf(const Header& header, const HeartbeatKey& key) {
  uint8_t full[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  std::array<uint8_t, kHeartbeatMacSize> mac{};
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), header.data(), header.size(), full, &length) ==
          nullptr ||
      length < mac.size()) {
    // Not expected; an all-zero MAC then fails verification (the other side computes it right).
    return mac;
  }
  std::memcpy(mac.data(), full, mac.size());
  return mac;
}

// HMAC, fetched once for the process (null if this OpenSSL has none).
EVP_MAC* Hmac() {
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  return hmac;
}

}  // namespace

HeartbeatMac::HeartbeatMac(const HeartbeatKey& key) : key_(key) {
  if (Hmac() == nullptr) return;
  EVP_MAC_CTX* context = EVP_MAC_CTX_new(Hmac());
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (context != nullptr && EVP_MAC_init(context, key_.data(), key_.size(), params) != 1) {
    EVP_MAC_CTX_free(context);
    context = nullptr;
  }
  absl::MutexLock lock(&mu_);
  context_ = context;
}

HeartbeatMac::~HeartbeatMac() {
  absl::MutexLock lock(&mu_);
  EVP_MAC_CTX_free(context_);
}

std::array<uint8_t, kHeartbeatMacSize> HeartbeatMac::MacOf(int64_t connection, uint64_t sequence) {
  const Header header = HeaderOf(connection, sequence);
  {
    absl::MutexLock lock(&mu_);
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t length = 0;
    // A null key restarts the context with the key it holds.
    if (context_ != nullptr && EVP_MAC_init(context_, nullptr, 0, nullptr) == 1 &&
        EVP_MAC_update(context_, header.data(), header.size()) == 1 &&
        EVP_MAC_final(context_, full, &length, sizeof(full)) == 1 && length >= kHeartbeatMacSize) {
      std::array<uint8_t, kHeartbeatMacSize> mac{};
      std::memcpy(mac.data(), full, mac.size());
      return mac;
    }
  }
  return ::loom::MacOf(header, key_);
}

HeartbeatDatagram HeartbeatMac::Sign(int64_t connection, uint64_t sequence) {
  HeartbeatDatagram beat;
  beat.connection = connection;
  beat.sequence = sequence;
  beat.mac = MacOf(connection, sequence);
  return beat;
}

bool HeartbeatMac::Verify(const HeartbeatDatagram& beat) {
  const std::array<uint8_t, kHeartbeatMacSize> expected = MacOf(beat.connection, beat.sequence);
  return CRYPTO_memcmp(expected.data(), beat.mac.data(), expected.size()) == 0;
}

HeartbeatDatagram SignedHeartbeat(int64_t connection, uint64_t sequence, const HeartbeatKey& key) {
  HeartbeatDatagram beat;
  beat.connection = connection;
  beat.sequence = sequence;
  beat.mac = MacOf(HeaderOf(connection, sequence), key);
  return beat;
}

bool VerifyHeartbeatMac(const HeartbeatDatagram& beat, const HeartbeatKey& key) {
  const std::array<uint8_t, kHeartbeatMacSize> expected = MacOf(HeaderOf(beat.connection, beat.sequence), key);
  return CRYPTO_memcmp(expected.data(), beat.mac.data(), expected.size()) == 0;
}

std::string EncodeHeartbeatDatagram(const HeartbeatDatagram& beat) {
  const Header header = HeaderOf(beat.connection, beat.sequence);
  std::string out(kHeartbeatDatagramSize, '\0');
  std::memcpy(out.data(), header.data(), header.size());
  std::memcpy(out.data() + kHeaderSize, beat.mac.data(), beat.mac.size());
  return out;
}

std::optional<HeartbeatDatagram> DecodeHeartbeatDatagram(std::string_view bytes) {
  if (bytes.size() != kHeartbeatDatagramSize || std::memcmp(bytes.data(), kMagic, 4) != 0 ||
      static_cast<uint8_t>(bytes[4]) != kVersion || bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0) {
    return std::nullopt;
  }
  HeartbeatDatagram beat;
  beat.connection = static_cast<int64_t>(GetBigEndian(bytes.data() + 8));
  beat.sequence = GetBigEndian(bytes.data() + 16);
  std::memcpy(beat.mac.data(), bytes.data() + kHeaderSize, beat.mac.size());
  return beat;
}

HeartbeatKey NewHeartbeatKey() {
  HeartbeatKey key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    // OpenSSL's generator failing is not expected; fall back to the kernel's.
    std::FILE* f = std::fopen("/dev/urandom", "rb");
    if (f != nullptr) {
      if (std::fread(key.data(), 1, key.size(), f) != key.size()) key.fill(0);
      std::fclose(f);
    }
  }
  return key;
}

absl::StatusOr<std::unique_ptr<HeartbeatSender>> HeartbeatSender::Open(const std::string& host, int port) {
  absl::StatusOr<Ipv4Endpoint> to = ResolveIpv4(absl::StrCat(host, ":", port));
  if (!to.ok()) return to.status();
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open a UDP socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = to->address;
  addr.sin_port = htons(to->port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot address UDP ", host, ":", port, ": ", std::strerror(e)));
  }
  return std::unique_ptr<HeartbeatSender>(new HeartbeatSender(fd));
}

HeartbeatSender::~HeartbeatSender() { close(fd_); }

bool HeartbeatSender::Send(const HeartbeatDatagram& beat) {
  const std::string bytes = EncodeHeartbeatDatagram(beat);
  return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

absl::StatusOr<std::unique_ptr<HeartbeatReceiver>> HeartbeatReceiver::Start(const std::string& host, int port,
                                                                            OnBeat on_beat) {
  absl::StatusOr<Ipv4Endpoint> at = ResolveIpv4(absl::StrCat(host, ":", port));
  if (!at.ok()) return at.status();
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot open a UDP socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = at->address;
  addr.sin_port = htons(at->port);
  // Room for a few seconds of 10,000 workers' beats while the thread is busy.
  const int buffer = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot receive heartbeats on UDP ", host, ":", port, ": ", std::strerror(e)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<HeartbeatReceiver>(new HeartbeatReceiver(fd, ntohs(addr.sin_port), std::move(on_beat)));
}

HeartbeatReceiver::HeartbeatReceiver(int fd, int port, OnBeat on_beat)
    : fd_(fd), port_(port), on_beat_(std::move(on_beat)) {
  thread_ = std::thread([this] { Loop(); });
}

HeartbeatReceiver::~HeartbeatReceiver() {
  stop_ = true;
  thread_.join();
  close(fd_);
}

void HeartbeatReceiver::Loop() {
  constexpr int kBatch = 64;
  // One byte more than a heartbeat, so that a longer datagram is seen as longer (and refused).
  std::vector<std::array<char, kHeartbeatDatagramSize + 1>> buffers(kBatch);
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> messages(kBatch);
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;  // wakes every 100 ms to see stop_
    for (int i = 0; i < kBatch; ++i) {
      iov[i] = {buffers[i].data(), buffers[i].size()};
      messages[i] = {};
      messages[i].msg_hdr.msg_iov = &iov[i];
      messages[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = recvmmsg(fd_, messages.data(), kBatch, MSG_DONTWAIT, nullptr);
    // Beats are spread over the second: a short nap after a partial batch lets the next ones
    // gather, so that 10,000 a second cost about a hundred wake-ups, not 10,000 (and a beat is at
    // most 10 ms late, against timeouts of seconds).
    const bool partial = n < kBatch;
    for (int i = 0; i < n; ++i) {
      const bool truncated = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
      std::optional<HeartbeatDatagram> beat =
          truncated ? std::nullopt
                    : DecodeHeartbeatDatagram(std::string_view(buffers[i].data(), messages[i].msg_len));
      if (!beat) {
        ++rejected_;
        continue;
      }
      ++received_;
      on_beat_(*beat);
    }
    if (partial) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace loom
