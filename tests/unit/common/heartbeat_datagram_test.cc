// Heartbeat datagrams: the codec round-trips and refuses anything but the exact layout (they are
// untrusted input from the network), and a real UDP sender and receiver on 127.0.0.1 deliver
// beats, counting the malformed datagrams they drop.
#include "common/heartbeat_datagram.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace loom {
namespace {

HeartbeatDatagram Beat(int64_t connection) {
  HeartbeatDatagram beat;
  beat.connection = connection;
  beat.key = NewHeartbeatKey();
  return beat;
}

TEST(HeartbeatDatagram, RoundTripsAndRefusesEveryOtherLayout) {
  const HeartbeatDatagram beat = Beat(0x0102030405060708);
  const std::string bytes = EncodeHeartbeatDatagram(beat);
  ASSERT_EQ(bytes.size(), kHeartbeatDatagramSize);
  EXPECT_EQ(bytes.substr(0, 4), "LMHB");
  EXPECT_EQ(static_cast<uint8_t>(bytes[8]), 0x01);  // big-endian
  std::optional<HeartbeatDatagram> back = DecodeHeartbeatDatagram(bytes);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->connection, beat.connection);
  EXPECT_EQ(back->key, beat.key);

  EXPECT_FALSE(DecodeHeartbeatDatagram(""));
  EXPECT_FALSE(DecodeHeartbeatDatagram(bytes.substr(0, 31)));
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
      EXPECT_EQ(noise.substr(0, 5), std::string("LMHB\1"));
    }
  }
  // Two keys differ (16 random bytes each).
  EXPECT_NE(NewHeartbeatKey(), NewHeartbeatKey());
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
  const HeartbeatDatagram a = Beat(1), b = Beat(2);
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
    EXPECT_EQ(d.key, d.connection == 1 ? a.key : b.key);
    ones += d.connection == 1;
  }
  EXPECT_EQ(ones, 50);
}

}  // namespace
}  // namespace loom
