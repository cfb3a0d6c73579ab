#include "common/rank_lifecycle.h"

#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"

namespace loom {
namespace {

std::atomic<bool> stop_requested{false};
std::atomic<bool> checkpoint_and_stop_requested{false};
std::function<absl::Status()>& Fence() {
  static auto* fence = new std::function<absl::Status()>();
  return *fence;
}

}  // namespace

void RequestStop() { stop_requested.store(true, std::memory_order_relaxed); }
bool StopRequested() { return stop_requested.load(std::memory_order_relaxed); }
void RequestCheckpointAndStop() { checkpoint_and_stop_requested.store(true, std::memory_order_relaxed); }
bool CheckpointAndStopRequested() { return checkpoint_and_stop_requested.load(std::memory_order_relaxed); }

void SetWriteFence(std::function<absl::Status()> fence) { Fence() = std::move(fence); }

absl::Status CheckWriteFence() {
  if (!Fence()) return absl::OkStatus();
  absl::Status s = Fence()();
  if (s.ok()) return s;
  // Stopping (SIGTERM): the worker's Leave dropped the lease while this checkpoint was written.
  if (StopRequested()) {
    return absl::UnavailableError(absl::StrCat(
        "stopped on SIGTERM while writing a checkpoint, which is not committed (the worker is stopping; ",
        s.message(), ")"));
  }
  // ABORTED: the attempt was replaced, a transient end (common/rank_exit.h), never the plan's fault.
  return absl::AbortedError(absl::StrCat("fenced: this rank may no longer write checkpoints (",
                                                    s.message(), ")"));
}

}  // namespace loom
