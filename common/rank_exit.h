// How loom-rank ends, so the coordinator can tell whose fault a failed attempt was (the plan's
// faults fail a job at once, the cluster's are retried: coordinator.proto FailureClass). The
// codes are sysexits.h's.
#pragma once

#include "absl/status/status.h"

namespace loom {

inline constexpr int kRankExitFailed = 1;          // a crash or an unclassified error: retried
inline constexpr int kRankExitInputMissing = 66;   // EX_NOINPUT: an input missing or unreadable (the plan's)
inline constexpr int kRankExitIoError = 74;        // EX_IOERR: a node I/O error, e.g. a full disk (the cluster's)
inline constexpr int kRankExitTransient = 75;      // EX_TEMPFAIL: a collective timed out or a peer was lost
inline constexpr int kRankExitConfigRejected = 78;  // EX_CONFIG: the stage's configuration rejected (the plan's)

// The exit code for a rank that failed with `status`:
//   NOT_FOUND, PERMISSION_DENIED                         -> input missing or unreadable
//   INVALID_ARGUMENT, FAILED_PRECONDITION, UNIMPLEMENTED,
//   OUT_OF_RANGE, ALREADY_EXISTS                         -> configuration rejected
//   DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED, CANCELLED   -> transient (timeouts, lost peers)
//   DATA_LOSS, RESOURCE_EXHAUSTED                         -> node I/O error
//   anything else                                        -> failed
int RankExitCodeFor(const absl::Status& status);

}  // namespace loom
