// Two process-wide facts a rank's main sets and the engine's long loops read:
//  - checkpoint and stop requested: SIGUSR1 arrived (a drain). The training loop saves a
//    checkpoint at its next step boundary, with its peers, and ends (common/rank_exit.h: 76).
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

// Checkpoint, then stop (SIGUSR1: its worker is drained, or stopping with time to save). The
// training loop agrees on it with its peers at the next step boundary (any rank's request stops
// them all), saves a checkpoint there and returns Preempted(). Async-signal-safe.
void RequestCheckpointAndStop();
bool CheckpointAndStopRequested();

// `fence` returns OK while this process may write checkpoints, else why not.
void SetWriteFence(std::function<absl::Status()> fence);
// OK when no fence is set; else the fence's answer, as ABORTED (the attempt was replaced: a
// transient exit, never counted as the plan's fault).
absl::Status CheckWriteFence();

}  // namespace loom
