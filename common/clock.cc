#include "common/clock.h"

#include <time.h>

#include "absl/time/clock.h"

namespace loom {
namespace {

absl::Duration Monotonic() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::DurationFromTimespec(ts);
}

struct Anchor {
  absl::Time wall = absl::Now();
  absl::Duration monotonic = Monotonic();
};

}  // namespace

absl::Time MonotonicNow() {
  static const Anchor anchor;  // thread-safe initialisation
  return anchor.wall + (Monotonic() - anchor.monotonic);
}

int64_t MonotonicUnixMillis() { return absl::ToUnixMillis(MonotonicNow()); }

}  // namespace loom
