#include "coordinator/failures.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "common/rank_exit.h"

namespace loom::coordinator {

using loom::v1::FAILURE_CLASS_CLUSTER;
using loom::v1::FAILURE_CLASS_PLAN;

Failure ClassifyRankExit(int exit_code, std::string message) {
  if (exit_code < 0) return {FAILURE_CLASS_CLUSTER, "signal", std::move(message)};
  switch (exit_code) {
    case kRankExitInputMissing:
      return {FAILURE_CLASS_PLAN, "input", std::move(message)};
    case kRankExitConfigRejected:
      return {FAILURE_CLASS_PLAN, "config", std::move(message)};
    case kRankExitTransient:
      return {FAILURE_CLASS_CLUSTER, "timeout", std::move(message)};
    case kRankExitIoError:
      return {FAILURE_CLASS_CLUSTER, "io", std::move(message)};
    case kRankExitResumeCheckpointBad:
      return {FAILURE_CLASS_CLUSTER, "checkpoint_bad", std::move(message)};
    case kRankExitPreempted:
      return {FAILURE_CLASS_CLUSTER, "preempted", std::move(message)};
    default:
      return {FAILURE_CLASS_CLUSTER, "crash", std::move(message)};
  }
}

Failure ClusterFault(std::string cause, std::string message) {
  return {FAILURE_CLASS_CLUSTER, std::move(cause), std::move(message)};
}

std::string Describe(const Failure& f) {
  std::string what = f.cause;
  if (f.cause == "worker_lost") what = "worker lost";
  if (f.cause == "rank_lost") what = "ranks lost";
  if (f.cause == "signal") what = "rank killed";
  if (f.cause == "timeout") what = "collective timeout or lost peer";
  if (f.cause == "io") what = "node I/O error";
  if (f.cause == "preempted") what = "drained after a checkpoint";
  if (f.cause == "checkpoint_bad") what = "checkpoint to resume from corrupt or incomplete";
  if (f.cause == "crash") what = "rank crashed";
  if (f.cause == "hung") what = "no step progress";
  if (f.cause == "input") what = "input missing or unreadable";
  if (f.cause == "config") what = "configuration rejected";
  if (f.cause == "repeat") what = "the same error as the attempt before";
  return absl::StrCat(f.failure_class == FAILURE_CLASS_PLAN ? "plan fault: " : "cluster fault: ", what);
}

RetrySettings RetrySettings::FromPlan(const loom::v1::TrainingPlan& plan) {
  RetrySettings s;
  const loom::v1::RetryPolicy& r = plan.retry();
  if (r.has_max_retries()) s.max_retries = r.max_retries();
  if (r.has_window_seconds()) s.window_ms = static_cast<int64_t>(std::llround(r.window_seconds() * 1000));
  if (r.has_initial_backoff_seconds()) s.initial_backoff_s = r.initial_backoff_seconds();
  if (r.has_max_backoff_seconds()) s.max_backoff_s = r.max_backoff_seconds();
  return s;
}

HangSettings HangSettings::FromPlan(const loom::v1::TrainingPlan& plan) {
  HangSettings s;
  if (plan.hang().has_step_time_factor()) s.step_time_factor = plan.hang().step_time_factor();
  if (plan.hang().has_min_seconds()) s.min_seconds = plan.hang().min_seconds();
  return s;
}

double HangSettings::LimitSeconds(double median_step_seconds) const {
  return std::max(step_time_factor * median_step_seconds, min_seconds);
}

RetryDecision DecideRetry(const RetrySettings& s, int64_t now_ms, double jitter, std::vector<int64_t>* times) {
  times->erase(std::remove_if(times->begin(), times->end(),
                              [&](int64_t t) { return t <= now_ms - s.window_ms; }),
               times->end());
  RetryDecision d;
  const int earlier = static_cast<int>(times->size());
  if (earlier >= s.max_retries) {
    d.why_not = absl::StrCat(earlier + 1, " cluster faults within ",
                             absl::FormatDuration(absl::Milliseconds(s.window_ms)),
                             ", and the plan's retry.max_retries is ", s.max_retries);
    return d;
  }
  d.retry = true;
  if (earlier > 0) {
    const double wait_s = std::min(s.max_backoff_s, s.initial_backoff_s * std::pow(2.0, earlier - 1));
    d.wait_ms = static_cast<int64_t>(std::llround(wait_s * 1000 * (0.5 + 0.5 * std::clamp(jitter, 0.0, 1.0))));
  }
  times->push_back(now_ms);
  return d;
}

}  // namespace loom::coordinator
