// Heartbeat datagrams: the codec round-trips and refuses anything but the exact version-2 layout
// (they are untrusted input from the network, and a version-1 datagram carries its key in clear),
// the MAC verifies only under the right key and over the exact bytes that were signed, and a real
// UDP sender and receiver on 127.0.0.1 deliver beats, counting the malformed datagrams they drop.
#include "common/heartbeat_datagram.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(HeartbeatDatagram, RoundTripsAndRefusesEveryOtherLayout) {
  const HeartbeatKey key = NewHeartbeatKey();
  const HeartbeatDatagram beat = SignedHeartbeat(0x0102030405060708, 0x1112131415161718, key);
  const std::string bytes = EncodeHeartbeatDatagram(beat);
  ASSERT_EQ(bytes.size(), kHeartbeatDatagramSize);
  EXPECT_EQ(bytes.substr(0, 8), std::string("LMHB\2\0\0\0", 8));
  EXPECT_EQ(static_cast<uint8_t>(bytes[8]), 0x01);  // big-endian
  EXPECT_EQ(static_cast<uint8_t>(bytes[15]), 0x08);
  EXPECT_EQ(static_cast<uint8_t>(bytes[16]), 0x11);
  EXPECT_EQ(static_cast<uint8_t>(bytes[23]), 0x18);
  EXPECT_EQ(std::memcmp(bytes.data() + 24, beat.mac.data(), kHeartbeatMacSize), 0);
  // The key is nowhere in the datagram.
  EXPECT_EQ(bytes.find(std::string(reinterpret_cast<const char*>(key.data()), 8)), std::string::npos);
  std::optional<HeartbeatDatagram> back = DecodeHeartbeatDatagram(bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->connection, beat.connection);
  EXPECT_EQ(back->sequence, beat.sequence);
  EXPECT_EQ(back->mac, beat.mac);
  EXPECT_TRUE(VerifyHeartbeatMac(*back, key));

  EXPECT_FALSE(DecodeHeartbeatDatagram(""));
  EXPECT_FALSE(DecodeHeartbeatDatagram(bytes.substr(0, kHeartbeatDatagramSize - 1)));  // truncated
  EXPECT_FALSE(DecodeHeartbeatDatagram(bytes + "x"));
  for (int at : {0, 3, 4, 5, 7}) {
    std::string changed = bytes;
    changed[at] ^= 0x40;
    EXPECT_FALSE(DecodeHeartbeatDatagram(changed)) << "byte " << at;
  }
  // Random bytes of every length up to 64 never decode, except by matching the header.
  std::mt19937 random(7);
  for (int i = 0; i < 20000; ++i) {
    std::string noise(random() % 65, '\0');
    for (char& c : noise) c = static_cast<char>(random());
    if (std::optional<HeartbeatDatagram> d = DecodeHeartbeatDatagram(noise)) {
      EXPECT_EQ(noise.substr(0, 5), std::string("LMHB\2"));
    }
  }
  // Two keys differ (32 random bytes each).
  EXPECT_NE(NewHeartbeatKey(), NewHeartbeatKey());
}

// A version-1 datagram (what older workers send: the header, then their 16-byte key in clear) is
// malformed now, and so is one of version 1's size with the version byte changed to 2.
TEST(HeartbeatDatagram, RefusesVersionOne) {
  std::string v1("LMHB\1\0\0\0", 8);
  v1 += std::string("\0\0\0\0\0\0\0\x07", 8);  // connection 7
  v1 += std::string(16, '\x5a');                    // the key
  ASSERT_EQ(v1.size(), 32u);
  EXPECT_FALSE(DecodeHeartbeatDatagram(v1));
  std::string v1_as_v2 = v1;
  v1_as_v2[4] = 2;
  EXPECT_FALSE(DecodeHeartbeatDatagram(v1_as_v2));
  // Padded to version 2's length, the version byte still refuses it.
  EXPECT_FALSE(DecodeHeartbeatDatagram(v1 + std::string(kHeartbeatDatagramSize - v1.size(), '\0')));
}

// The MAC holds only under the connection's key and only for the bytes that were signed: any
// flipped bit of the connection id, the sequence number or the MAC itself makes it fail.
TEST(HeartbeatDatagram, TheMacVerifiesOnlyUnderItsKeyAndForItsExactBytes) {
  const HeartbeatKey key = NewHeartbeatKey();
  HeartbeatKey other = key;
  other[31] ^= 1;
  const HeartbeatDatagram beat = SignedHeartbeat(42, 1, key);
  EXPECT_TRUE(VerifyHeartbeatMac(beat, key));
  EXPECT_FALSE(VerifyHeartbeatMac(beat, other));
  EXPECT_FALSE(VerifyHeartbeatMac(beat, NewHeartbeatKey()));
  // Deterministic: the same connection, sequence and key give the same MAC; another sequence
  // another one.
  EXPECT_EQ(SignedHeartbeat(42, 1, key).mac, beat.mac);
  EXPECT_NE(SignedHeartbeat(42, 2, key).mac, beat.mac);
  EXPECT_NE(SignedHeartbeat(43, 1, key).mac, beat.mac);

  const std::string bytes = EncodeHeartbeatDatagram(beat);
  for (size_t at = 8; at < kHeartbeatDatagramSize; ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = bytes;
      flipped[at] ^= static_cast<char>(1 << bit);
      std::optional<HeartbeatDatagram> d = DecodeHeartbeatDatagram(flipped);
      ASSERT_TRUE(d.has_value()) << "byte " << at;  // the layout is still right
      EXPECT_FALSE(VerifyHeartbeatMac(*d, key)) << "byte " << at << " bit " << bit;
    }
  }
  // A MAC taken from one datagram does not carry over to another sequence number.
  HeartbeatDatagram moved = SignedHeartbeat(42, 2, key);
  moved.mac = beat.mac;
  EXPECT_FALSE(VerifyHeartbeatMac(moved, key));
}

// The keyed HeartbeatMac (what the coordinator checks with) gives exactly the MACs of HMAC()
// from scratch, for every datagram in a row (its context restarts between them), from several
// threads at once, and refuses what another key signed.
TEST(HeartbeatDatagram, AKeyedMacAgreesWithHmacFromScratch) {
  const HeartbeatKey key = NewHeartbeatKey();
  HeartbeatMac mac(key);
  HeartbeatMac other(NewHeartbeatKey());
  for (uint64_t n = 1; n <= 200; ++n) {
    const HeartbeatDatagram signed_once = SignedHeartbeat(7, n, key);
    EXPECT_EQ(mac.Sign(7, n).mac, signed_once.mac) << n;
    EXPECT_TRUE(mac.Verify(signed_once)) << n;
    EXPECT_FALSE(other.Verify(signed_once)) << n;
    EXPECT_TRUE(VerifyHeartbeatMac(mac.Sign(7, n), key)) << n;
    HeartbeatDatagram flipped = signed_once;
    flipped.mac[n % kHeartbeatMacSize] ^= 1;
    EXPECT_FALSE(mac.Verify(flipped)) << n;
  }
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t n = 1; n <= 500; ++n) {
        if (!mac.Verify(SignedHeartbeat(t, n, key))) ++wrong;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(HeartbeatDatagram, ASenderReachesAReceiverAndMalformedDatagramsAreCountedAndDropped) {
  std::mutex mu;
  std::vector<HeartbeatDatagram> got;
  absl::StatusOr<std::unique_ptr<HeartbeatReceiver>> receiver =
      HeartbeatReceiver::Start("127.0.0.1", 0, [&](const HeartbeatDatagram& b) {
        std::lock_guard<std::mutex> lock(mu);
        got.push_back(b);
      });
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  ASSERT_GT((*receiver)->port(), 0);
  absl::StatusOr<std::unique_ptr<HeartbeatSender>> sender = HeartbeatSender::Open("127.0.0.1", (*receiver)->port());
  ASSERT_TRUE(sender.ok()) << sender.status();
  const HeartbeatKey key = NewHeartbeatKey();
  const HeartbeatDatagram a = SignedHeartbeat(1, 1, key), b = SignedHeartbeat(2, 1, key);
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE((*sender)->Send(a));
    ASSERT_TRUE((*sender)->Send(b));
  }
  // Garbage from another socket: too short, too long, the wrong magic.
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons((*receiver)->port());
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string wrong = EncodeHeartbeatDatagram(a);
  wrong[0] = 'X';
  for (const std::string& g : {std::string("hi"), EncodeHeartbeatDatagram(a) + "tail", wrong}) {
    ASSERT_EQ(sendto(fd, g.data(), g.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
              static_cast<ssize_t>(g.size()));
  }
  close(fd);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until && ((*receiver)->received() < 100 || (*receiver)->rejected() < 3))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ((*receiver)->received(), 100u);
  EXPECT_EQ((*receiver)->rejected(), 3u);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(got.size(), 100u);
  int ones = 0;
  for (const HeartbeatDatagram& d : got) {
    EXPECT_EQ(d.mac, d.connection == 1 ? a.mac : b.mac);
    EXPECT_TRUE(VerifyHeartbeatMac(d, key));
    ones += d.connection == 1;
  }
  EXPECT_EQ(ones, 50);
}

}  // namespace
}  // namespace loom
