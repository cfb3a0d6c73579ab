// How loom-rank ends, so the coordinator can tell whose fault a failed attempt was (the plan's
// faults fail a job at once, the cluster's are retried: coordinator.proto FailureClass). The
// codes are sysexits.h's.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace loom {

inline constexpr int kRankExitFailed = 1;          // a crash or an unclassified error: retried
inline constexpr int kRankExitResumeCheckpointBad = 65;  // EX_DATAERR: the checkpoint to resume from is corrupt or incomplete
inline constexpr int kRankExitInputMissing = 66;   // EX_NOINPUT: an input missing or unreadable (the plan's)
inline constexpr int kRankExitIoError = 74;        // EX_IOERR: a node I/O error, e.g. a full disk (the cluster's)
inline constexpr int kRankExitTransient = 75;      // EX_TEMPFAIL: a collective timed out or a peer was lost
inline constexpr int kRankExitPreempted = 76;     // stopped after a checkpoint, on request (a drain): moved, not retried
inline constexpr int kRankExitConfigRejected = 78;  // EX_CONFIG: the stage's configuration rejected (the plan's)

// `status` (DATA_LOSS: a digest mismatch, a truncated or unparsable file; NOT_FOUND: a missing
// file) arose loading the checkpoint the rank resumes from: the coordinator marks that checkpoint
// bad and resumes from the one before. Other codes (a transient I/O error) are returned as they are.
absl::Status ResumeCheckpointBad(absl::Status status);
// The rank stopped on request after its checkpoint at `step` (RequestCheckpointAndStop): exit 76.
absl::Status Preempted(int64_t step);

// The exit code for a rank that failed with `status` (ResumeCheckpointBad's: resume checkpoint bad):
//   NOT_FOUND, PERMISSION_DENIED                         -> input missing or unreadable
//   INVALID_ARGUMENT, FAILED_PRECONDITION, UNIMPLEMENTED,
//   OUT_OF_RANGE, ALREADY_EXISTS                         -> configuration rejected
//   DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED, CANCELLED   -> transient (timeouts, lost peers)
//   DATA_LOSS, RESOURCE_EXHAUSTED                         -> node I/O error
//   anything else                                        -> failed
int RankExitCodeFor(const absl::Status& status);

}  // namespace loom
