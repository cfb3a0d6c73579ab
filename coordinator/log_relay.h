// Requests for ranks' logs that wait for their worker's answer (`loom logs`): the coordinator
// sends a LogRequest down a worker's stream and the client's call waits here until that worker's
// LogChunk comes up with the same request id. At most kMaxPending requests wait at once; an answer
// from another worker than the one asked is ignored. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

class LogRelay {
 public:
  static constexpr size_t kMaxPending = 64;

  // A new request to `worker_id`: its id, or RESOURCE_EXHAUSTED when kMaxPending wait already.
  absl::StatusOr<int64_t> Expect(const std::string& worker_id);
  // The answer of `worker_id`; ignored unless a request of that id waits for that worker.
  void Deliver(const std::string& worker_id, const loom::v1::LogChunk& chunk);
  // Waits for the answer to `id` (and forgets the request); DEADLINE_EXCEEDED after `timeout`.
  absl::StatusOr<loom::v1::LogChunk> Wait(int64_t id, absl::Duration timeout);

 private:
  struct Pending {
    std::string worker_id;
    std::optional<loom::v1::LogChunk> chunk;
  };
  absl::Mutex mu_;
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<int64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::coordinator
