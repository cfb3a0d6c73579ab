// The protocol between the worker daemon and the rank processes it starts (worker/README.md).
//
//   daemon                                          rank (loom-rank, or a test fixture)
//   writes <work-dir>/<job>#<attempt>/rank<r>/assignment.pb (binary loom.v1.Assignment)
//   spawns `<rank-binary> --assignment PATH` with
//     LOOM_REPORT_FD=<fd>   the write end of a pipe
//     stderr -> <rank dir>/rank.log
//                                                   writes varint-length-delimited
//                                                   loom.v1.WorkerMessage (progress, checkpoint)
//                                                   to LOOM_REPORT_FD
//   reads them and forwards them to the coordinator
//   on exit: RankExit{exit_code or -signal, last non-empty stderr line}
//   abort: SIGTERM, SIGKILL one second later
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "loom/v1/coordinator.pb.h"

namespace loom {

inline constexpr char kReportFdEnv[] = "LOOM_REPORT_FD";

// Rank side: writes messages to the daemon. Thread-safe; Send is all-or-nothing per message.
class RankReporter {
 public:
  // From LOOM_REPORT_FD; FAILED_PRECONDITION when the variable is missing or not a number.
  static absl::StatusOr<RankReporter> FromEnvironment();
  // Takes ownership of `fd` (closed on destruction).
  explicit RankReporter(int fd);
  RankReporter(RankReporter&& other) noexcept;
  RankReporter& operator=(RankReporter&& other) noexcept;
  RankReporter(const RankReporter&) = delete;
  RankReporter& operator=(const RankReporter&) = delete;
  ~RankReporter();

  // Writes one length-delimited message. Only `progress` and `checkpoint` bodies are allowed.
  absl::Status Send(const loom::v1::WorkerMessage& message);

 private:
  int fd_ = -1;
  std::unique_ptr<absl::Mutex> mu_;
};

// Daemon side: reads the messages a rank writes to its pipe. Not thread-safe; one reader thread.
class RankMessageReader {
 public:
  // Takes ownership of `fd` (the read end).
  explicit RankMessageReader(int fd);
  ~RankMessageReader();
  RankMessageReader(const RankMessageReader&) = delete;
  RankMessageReader& operator=(const RankMessageReader&) = delete;

  // Blocks for the next message; std::nullopt at end of stream (the rank closed the pipe or
  // exited). A malformed message is an error (DATA_LOSS) and ends the stream.
  absl::StatusOr<std::optional<loom::v1::WorkerMessage>> Next();

 private:
  // Reads more bytes into buffer_; false at end of file.
  absl::StatusOr<bool> Fill();
  int fd_ = -1;
  std::string buffer_;
  size_t offset_ = 0;
};

// Writes `assignment` (binary) to `path`, durably. Used by the daemon; tests read it back with
// ReadAssignment.
absl::Status WriteAssignment(const std::string& path, const loom::v1::Assignment& assignment);
absl::StatusOr<loom::v1::Assignment> ReadAssignment(const std::string& path);

// "<job_id>#<attempt>/rank<r>" as shown by `loom workers`.
std::string RankName(const loom::v1::RankRef& rank);

}  // namespace loom
