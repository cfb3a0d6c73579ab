// One rank running as a child process (protocol in worker/rank_protocol.h): the report pipe is
// read on its own thread, the process is reaped on another, and Abort escalates SIGTERM to
// SIGKILL after one second. The child dies with the daemon (PR_SET_PDEATHSIG), so a killed
// daemon leaves no orphan rank writing checkpoints for an attempt that is over.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/v1/coordinator.pb.h"

namespace loom::worker {

struct RankProcessOptions {
  std::string binary;
  std::string assignment_path;
  // stdout and stderr of the rank go here.
  std::string log_path;
  // Extra NAME=value environment entries (LOOM_REPORT_FD is added).
  std::vector<std::string> env;
  loom::v1::RankRef rank;
};

class RankProcess {
 public:
  using MessageFn = std::function<void(const loom::v1::WorkerMessage&)>;
  // Called once, on the reaper thread, after every message of the rank was delivered.
  using ExitFn = std::function<void(const loom::v1::RankExit&)>;

  static absl::StatusOr<std::unique_ptr<RankProcess>> Start(RankProcessOptions options, MessageFn on_message,
                                                            ExitFn on_exit);
  // Aborts (if still running) and joins the threads.
  ~RankProcess();

  // SIGTERM now, SIGKILL `grace` later if it has not exited. A rank stops at its next step
  // boundary on SIGTERM; the short default is for an attempt the coordinator gave up on. Idempotent.
  void Abort(absl::Duration grace = absl::Seconds(1));
  // Sends `signal` to the rank's process alone (not its group), e.g. SIGUSR1: checkpoint and stop.
  void Signal(int signal);
  bool exited() const { return exited_; }
  pid_t pid() const { return pid_; }
  const loom::v1::RankRef& rank() const { return options_.rank; }

 private:
  RankProcess(RankProcessOptions options, MessageFn on_message, ExitFn on_exit);
  void Reap();

  RankProcessOptions options_;
  MessageFn on_message_;
  ExitFn on_exit_;
  pid_t pid_ = -1;
  int read_fd_ = -1;
  std::atomic<bool> exited_{false};
  std::atomic<int64_t> kill_at_ms_{0};  // when to SIGKILL after an Abort (steady clock), 0 = never
  std::thread reader_;
  std::thread reaper_;
};

// The last non-empty line of a file (reads at most its last 8 KiB); "" when none.
std::string LastNonEmptyLine(const std::string& path);

}  // namespace loom::worker
