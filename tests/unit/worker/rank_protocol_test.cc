#include "worker/rank_protocol.h"

#include <unistd.h>

#include <cstdlib>
#include <thread>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(RankProtocol, MessagesCrossThePipeInOrderAndEndAtEof) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::thread writer([fd = fds[1]] {
    RankReporter reporter(fd);
    for (int i = 1; i <= 100; ++i) {
      loom::v1::WorkerMessage m;
      m.mutable_progress()->set_step(i);
      // Large enough that messages straddle the reader's buffer boundaries.
      (*m.mutable_progress()->mutable_mix_weights())[std::string(1000 + i, 'x')] = 0.5;
      ASSERT_TRUE(reporter.Send(m).ok());
    }
    loom::v1::WorkerMessage c;
    c.mutable_checkpoint()->set_path("/ckpt/step-1");
    ASSERT_TRUE(reporter.Send(c).ok());
    loom::v1::WorkerMessage hb;
    hb.mutable_heartbeat();
    EXPECT_EQ(reporter.Send(hb).code(), absl::StatusCode::kInvalidArgument);
  });
  RankMessageReader reader(fds[0]);
  for (int i = 1; i <= 100; ++i) {
    auto m = reader.Next();
    ASSERT_TRUE(m.ok() && m->has_value()) << i;
    EXPECT_EQ((*m)->progress().step(), i);
  }
  auto c = reader.Next();
  ASSERT_TRUE(c.ok() && c->has_value());
  EXPECT_EQ((*c)->checkpoint().path(), "/ckpt/step-1");
  writer.join();
  auto end = reader.Next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

TEST(RankProtocol, GarbageAndTruncationAreDataLoss) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const char garbage[] = "\x05\xff\xff\xff\xff\xff";  // length 5, then not a message
  ASSERT_EQ(write(fds[1], garbage, 6), 6);
  close(fds[1]);
  RankMessageReader reader(fds[0]);
  EXPECT_EQ(reader.Next().status().code(), absl::StatusCode::kDataLoss);

  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], "\x10\x08", 2), 2);  // says 16 bytes, has 1
  close(fds[1]);
  RankMessageReader truncated(fds[0]);
  EXPECT_EQ(truncated.Next().status().code(), absl::StatusCode::kDataLoss);
}

TEST(RankProtocol, ReporterComesFromTheEnvironment) {
  unsetenv(kReportFdEnv);
  EXPECT_EQ(RankReporter::FromEnvironment().status().code(), absl::StatusCode::kFailedPrecondition);
  setenv(kReportFdEnv, "seven", 1);
  EXPECT_EQ(RankReporter::FromEnvironment().status().code(), absl::StatusCode::kFailedPrecondition);
  const int fd = dup(2);
  setenv(kReportFdEnv, std::to_string(fd).c_str(), 1);
  EXPECT_TRUE(RankReporter::FromEnvironment().ok());
  unsetenv(kReportFdEnv);
}

TEST(RankProtocol, AssignmentFileRoundTrip) {
  const std::string path = ::testing::TempDir() + "/assignment.pb";
  loom::v1::Assignment a;
  a.mutable_rank()->set_job_id("p-1/core");
  a.set_resume_from("/ckpt/step-5");
  ASSERT_TRUE(WriteAssignment(path, a).ok());
  absl::StatusOr<loom::v1::Assignment> b = ReadAssignment(path);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->SerializeAsString(), a.SerializeAsString());
  EXPECT_EQ(RankName(a.rank()), "p-1/core#0/rank0");
}

}  // namespace
}  // namespace loom
