#include "coordinator/log_relay.h"

#include "absl/strings/str_cat.h"

namespace loom::coordinator {

absl::StatusOr<int64_t> LogRelay::Expect(const std::string& worker_id) {
  absl::MutexLock lock(&mu_);
  if (pending_.size() >= kMaxPending) {
    return absl::ResourceExhaustedError(
        absl::StrCat(kMaxPending, " log reads are waiting for their workers already; try again in a moment"));
  }
  const int64_t id = next_id_++;
  pending_[id].worker_id = worker_id;
  return id;
}

void LogRelay::Deliver(const std::string& worker_id, const loom::v1::LogChunk& chunk) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(chunk.request_id());
  if (it == pending_.end() || it->second.worker_id != worker_id) return;
  it->second.chunk = chunk;
}

absl::StatusOr<loom::v1::LogChunk> LogRelay::Wait(int64_t id, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto answered = [this, id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = pending_.find(id);
    return it == pending_.end() || it->second.chunk.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&answered), timeout);
  auto it = pending_.find(id);
  if (it == pending_.end()) return absl::InternalError("log request forgotten");
  Pending pending = std::move(it->second);
  pending_.erase(it);
  if (!pending.chunk.has_value()) {
    return absl::DeadlineExceededError(
        absl::StrCat("worker ", pending.worker_id, " did not send the log within ", absl::FormatDuration(timeout)));
  }
  return std::move(*pending.chunk);
}

}  // namespace loom::coordinator
