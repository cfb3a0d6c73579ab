// Two process-wide facts a rank's main sets and the engine's long loops read:
//  - stop requested: SIGTERM arrived (its worker is stopping: systemctl stop, the end of a Slurm
//    allocation). A training loop stops at its next step boundary.
//  - the write fence: whether this process may still commit or delete checkpoints. A rank of an
//    attempt the coordinator has replaced (its host was partitioned and came back) must not touch
//    the new attempt's files; the fence asks the coordinator (worker/rank/rank_main.cc).
// Outside a rank (`loom train-local`, tests) nothing is set: no stop, and every write is allowed.
#pragma once

#include <functional>

#include "absl/status/status.h"

namespace loom {

// Async-signal-safe: only sets a flag.
void RequestStop();
bool StopRequested();

// `fence` returns OK while this process may write checkpoints, else why not.
void SetWriteFence(std::function<absl::Status()> fence);
// OK when no fence is set; else the fence's answer, as ABORTED (the attempt was replaced: a
// transient exit, never counted as the plan's fault).
absl::Status CheckWriteFence();

}  // namespace loom
