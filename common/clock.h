// The clock Loom's deadlines, timeouts and durations run on: it advances with CLOCK_MONOTONIC,
// so a step of the wall clock (NTP correcting a drift, an operator's `date -s`, a VM resumed)
// moves no deadline, marks no worker lost and makes no duration negative.
//
// It reads as an absl::Time anchored to the wall clock when the process first asks, so values
// also serve as timestamps; after a step they differ from the wall clock by the step until the
// process restarts. Use absl::Now() only for what people read against the wall (log lines).
//
// absl's own waits with a deadline (Mutex::AwaitWithDeadline, CondVar::WaitWithDeadline) count
// against the wall clock: pass them a timeout, not a deadline from here.
#pragma once

#include <cstdint>

#include "absl/time/time.h"

namespace loom {

absl::Time MonotonicNow();

// MonotonicNow() in Unix milliseconds.
int64_t MonotonicUnixMillis();

}  // namespace loom
