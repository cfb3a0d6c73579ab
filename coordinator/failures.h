// Whose fault a failed attempt is, and what the plan's retry policy makes of it. Pure functions,
// so the policy is tested without processes or clocks.
//
//   how the attempt ended                          class     cause
//   a worker lost (stream broken, no heartbeat)    cluster   worker_lost
//   a worker that left (SIGTERM: drained, stopped) cluster   worker_left
//   ranks not reported after a restart             cluster   rank_lost
//   a rank killed by a signal                      cluster   signal
//   exit 75: a collective timed out, a peer lost   cluster   timeout
//   exit 76: stopped after a checkpoint (a drain)  cluster   preempted
//   exit 74: a node I/O error (EIO, disk full)     cluster   io
//   exit 65: the checkpoint resumed from is bad    cluster   checkpoint_bad
//   no step for max(k x median step, floor)        cluster   hung
//   any other non-zero exit                        cluster   crash
//   exit 66: an input missing or unreadable        plan      input
//   exit 78: the configuration rejected            plan      config
//   a crash repeating the last one identically     plan      repeat
//
// (loom-rank's exit codes: common/rank_exit.h.) The plan's faults fail the job at once; the
// cluster's are retried: the first retry at once, then with exponential backoff and jitter, within
// a budget of retries per window of time (plan.proto RetryPolicy). A worker that left was stopped
// on purpose (maintenance, a Slurm allocation's end): its jobs move at once and the move uses none
// of the budget, however often hosts are drained. A bad checkpoint (corrupt or incomplete) is
// marked so, and the job resumes at once from the newest good one of its stage, also outside the
// budget (each such failure retires one checkpoint, so it cannot loop).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

struct Failure {
  loom::v1::FailureClass failure_class = loom::v1::FAILURE_CLASS_CLUSTER;
  std::string cause;
  std::string message;  // for the reason: "rank 1 on w2 exited with code 66: ..."
  // When it happened, if before its detection (a lost worker's last heartbeat, a hung job's last
  // step); 0: when it was detected. For the goodput ledger's failure detection time.
  int64_t failed_at_ms = 0;
};

// A rank's exit: `exit_code` is the process's (negative: killed by that signal).
Failure ClassifyRankExit(int exit_code, std::string message);
// A cluster fault of the given cause (worker_lost, rank_lost).
Failure ClusterFault(std::string cause, std::string message);
// "plan fault: input missing or unreadable", "cluster fault: worker lost".
std::string Describe(const Failure& failure);

// The plan's RetryPolicy with its defaults applied.
struct RetrySettings {
  int max_retries = 10;
  int64_t window_ms = 3600 * 1000;
  double initial_backoff_s = 1;
  double max_backoff_s = 300;
  static RetrySettings FromPlan(const loom::v1::TrainingPlan& plan);
};

// The plan's HangPolicy with its defaults applied.
struct HangSettings {
  double step_time_factor = 10;
  double min_seconds = 300;
  static HangSettings FromPlan(const loom::v1::TrainingPlan& plan);
  // How long a job may go without a step, given the median of its recent step times (0: none
  // measured yet).
  double LimitSeconds(double median_step_seconds) const;
};

struct RetryDecision {
  bool retry = false;
  int64_t wait_ms = 0;  // before the next attempt is placed
  std::string why_not;  // when not retried
};

// One more cluster fault at `now_ms`. `fault_times_ms` holds the earlier faults' times (oldest
// first); those outside the window are dropped, and this one is added when it is retried.
// `jitter` in [0, 1) picks the wait within [w/2, w].
RetryDecision DecideRetry(const RetrySettings& settings, int64_t now_ms, double jitter,
                          std::vector<int64_t>* fault_times_ms);

}  // namespace loom::coordinator
