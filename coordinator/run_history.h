// Run history: the per-step figures of each job (step, tokens, loss, learning rate, gradient
// norm, tokens/s, eval results, time), as its rank 0 reported them, kept in the coordinator's
// RocksDB store so that `loom metrics` shows a run's curves after it ended and after a
// coordinator restart. Prometheus shows the present; this is the record people who train read.
//
// Bounded: a job keeps at most `max_points` points. Points are kept at steps that are multiples
// of the job's stride (1 at first); when a job passes `max_points`, the stride doubles and the
// points off the new stride are deleted, so the history always spans the whole run evenly, at a
// coarser grain as it grows (between max_points/2 and max_points points). The newest point is
// kept whatever its step, so the latest figures are always there. A step that a later attempt ran
// again (after a failure) is kept once per attempt.
//
// Keys (proto/loom/v1/coordinator_store.proto):
//   hist/<plan_id>/<stage>/<step:020>/<attempt:010>   MetricPoint
//   hist/<plan_id>/<stage>/stride                      the job's stride, decimal
// Writes are not synced (a killed coordinator keeps them; a machine crash may lose the last few
// steps). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/store.h"
#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

class RunHistory {
 public:
  // Default of `loom-coordinator --history-points`: 1000 points of ~100 bytes per job.
  static constexpr int kDefaultMaxPoints = 1000;
  // `max_points` is at least 2 (smaller values are raised to 2).
  RunHistory(Store* store, int max_points);

  // Records one Progress of rank 0 of the job's current attempt. A second report of the same step
  // and attempt (an evaluation after the training step) is merged into its point.
  absl::Status Record(const std::string& plan_id, const std::string& stage, const loom::v1::Progress& progress);

  // The points of one job, by step then attempt.
  absl::StatusOr<std::vector<loom::v1::MetricPoint>> Read(const std::string& plan_id, const std::string& stage);

  // Deletes every point of the plan (for when the plan is deleted).
  absl::Status ForgetPlan(const std::string& plan_id);

  int max_points() const { return max_points_; }

 private:
  struct Job {
    int64_t count = 0;   // points stored
    int64_t stride = 1;  // points are kept at steps that are multiples of it (and the newest)
    bool has_last = false;
    loom::v1::MetricPoint last;  // the newest point
  };
  static std::string JobPrefix(const std::string& plan_id, const std::string& stage);
  static std::string PointKey(const std::string& prefix, int64_t step, int32_t attempt);
  // The job's state, read from the store the first time this process sees the job.
  absl::StatusOr<Job*> LoadJob(const std::string& prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Doubles the stride until at most max_points_ points are left, deleting the others.
  absl::Status Thin(const std::string& prefix, Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Store* const store_;
  const int max_points_;
  absl::Mutex mu_;
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);  // by key prefix
};

}  // namespace loom::coordinator
