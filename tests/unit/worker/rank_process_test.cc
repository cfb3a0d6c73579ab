// Rank child processes with shell scripts as the rank program: exit codes, the last stderr
// line, and aborts obeyed within a second even by a rank that ignores SIGTERM.
#include "worker/daemon/rank_process.h"

#include <sys/stat.h>

#include <chrono>
#include <fstream>

#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"

namespace loom::worker {
namespace {

struct Outcome {
  absl::Notification done;
  loom::v1::RankExit exit;
  int messages = 0;
};

std::string Script(const std::string& name, const std::string& body) {
  const std::string path = ::testing::TempDir() + "/" + name + ".sh";
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  chmod(path.c_str(), 0755);
  return path;
}

std::unique_ptr<RankProcess> Start(const std::string& script, Outcome* out) {
  RankProcessOptions o;
  o.binary = script;
  o.assignment_path = "/nonexistent/assignment.pb";
  o.log_path = script + ".log";
  std::remove(o.log_path.c_str());
  o.rank.set_job_id("p-1/core");
  o.rank.set_attempt(1);
  absl::StatusOr<std::unique_ptr<RankProcess>> p = RankProcess::Start(
      o, [out](const loom::v1::WorkerMessage&) { ++out->messages; },
      [out](const loom::v1::RankExit& e) {
        out->exit = e;
        out->done.Notify();
      });
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

TEST(RankProcess, ReportsExitCodeAndTheLastStderrLine) {
  Outcome out;
  auto p =
      Start(Script("fails", "echo starting; echo 'error: shard 3 is corrupt' >&2; echo >&2; exit 7"), &out);
  ASSERT_TRUE(out.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(out.exit.exit_code(), 7);
  EXPECT_EQ(out.exit.error(), "error: shard 3 is corrupt");
  EXPECT_EQ(out.exit.rank().job_id(), "p-1/core");
}

TEST(RankProcess, SeesItsArgumentsAndReportFd) {
  Outcome out;
  auto p = Start(Script("args", "[ \"$1\" = --assignment ] && [ \"$LOOM_REPORT_FD\" = 3 ] && exit 0; exit 9"),
                 &out);
  ASSERT_TRUE(out.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(out.exit.exit_code(), 0);
}

TEST(RankProcess, AbortEndsARankWithinASecondEvenIfItIgnoresSigterm) {
  Outcome polite, stubborn;
  auto a = Start(Script("sleeps", "exec sleep 30"), &polite);
  auto b = Start(Script("stubborn", "trap '' TERM; while true; do sleep 0.05; done"), &stubborn);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const auto start = std::chrono::steady_clock::now();
  a->Abort();
  b->Abort();
  ASSERT_TRUE(polite.done.WaitForNotificationWithTimeout(absl::Seconds(2)));
  EXPECT_EQ(polite.exit.exit_code(), -15);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(500));
  ASSERT_TRUE(stubborn.done.WaitForNotificationWithTimeout(absl::Seconds(3)));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(stubborn.exit.exit_code(), -9);
  EXPECT_GE(elapsed, std::chrono::milliseconds(950));
  EXPECT_LT(elapsed, std::chrono::milliseconds(1500));
}

TEST(RankProcess, AMissingBinaryIsAnError) {
  RankProcessOptions o;
  o.binary = "/nonexistent/loom-rank";
  o.log_path = ::testing::TempDir() + "/missing.log";
  auto p = RankProcess::Start(
      o, [](const auto&) {}, [](const auto&) {});
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(p.status().message().find("/nonexistent/loom-rank"), std::string::npos);
}

}  // namespace
}  // namespace loom::worker
