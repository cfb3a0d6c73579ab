#include "coordinator/log_relay.h"

#include <thread>

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

loom::v1::LogChunk Chunk(int64_t id, const std::string& data) {
  loom::v1::LogChunk c;
  c.set_request_id(id);
  c.set_data(data);
  return c;
}

TEST(LogRelay, TheAskedWorkersAnswerReachesTheWaitingCall) {
  LogRelay relay;
  absl::StatusOr<int64_t> id = relay.Expect("w1");
  ASSERT_TRUE(id.ok());
  std::thread worker([&] {
    relay.Deliver("w2", Chunk(*id, "from the wrong worker"));  // ignored
    relay.Deliver("w1", Chunk(*id, "hello"));
  });
  absl::StatusOr<loom::v1::LogChunk> chunk = relay.Wait(*id, absl::Seconds(10));
  worker.join();
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  EXPECT_EQ(chunk->data(), "hello");
}

TEST(LogRelay, NoAnswerIsADeadlineNamingTheWorker) {
  LogRelay relay;
  absl::StatusOr<int64_t> id = relay.Expect("w1");
  ASSERT_TRUE(id.ok());
  absl::StatusOr<loom::v1::LogChunk> chunk = relay.Wait(*id, absl::Milliseconds(20));
  EXPECT_EQ(chunk.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(chunk.status().message().find("worker w1"), std::string::npos) << chunk.status();
  relay.Deliver("w1", Chunk(*id, "late"));  // forgotten: nothing waits, nothing is kept
}

TEST(LogRelay, AtMostKMaxPendingWait) {
  LogRelay relay;
  for (size_t i = 0; i < LogRelay::kMaxPending; ++i) ASSERT_TRUE(relay.Expect("w1").ok());
  EXPECT_EQ(relay.Expect("w1").status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace loom::coordinator
