// The job state machine (states in proto/loom/v1/coordinator.proto, diagram in README.md).
// Pure functions over JobStatus: the coordinator calls Transition for every change, which
// refuses impossible moves and records (time, from, to, attempt, reason).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

bool IsTerminal(loom::v1::JobState state);
// True while an attempt of the job is placed (its ranks hold slots or are starting).
bool HasAttemptPlaced(loom::v1::JobState state);
bool CanTransition(loom::v1::JobState from, loom::v1::JobState to);

// Moves `job` to `to`, sets its reason and appends a JobTransition with job->attempt().
// FAILED_PRECONDITION (and no change) when the move is not allowed.
absl::Status Transition(loom::v1::JobStatus* job, loom::v1::JobState to, const std::string& reason,
                        int64_t now_ms);

// ACTIVE while a job has not ended; then FAILED if one failed, CANCELLED if one was cancelled,
// SUCCEEDED otherwise.
loom::v1::PlanState DerivePlanState(const loom::v1::PlanStatus& plan);

}  // namespace loom::coordinator
