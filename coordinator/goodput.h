// The goodput ledger: where each second of a job's wall time went, kept live by the coordinator.
//
// A job's wall time runs from when it could first run (its plan's submission, or the end of the
// last stage it depends on) to its end. Every second of it goes to exactly one bucket:
//
//   queued                    waiting for free slots before the first attempt
//   placement_and_rendezvous  from placement to the first step: ranks starting, groups joining
//   startup_and_load          building the model, loading weights or the checkpoint resumed from
//   data_wait                 waiting for batches
//   productive                the stage's own work (forward, backward, optimizer; generation...)
//   communication             collectives not hidden behind compute
//   checkpoint_save           the blocking part of saves
//   evaluation                evaluations during the stage
//   failure_detection         from a failure (a worker's last heartbeat, a rank's last step) to
//                             its detection
//   recovery                  from the detection to the next attempt's first step
//   wasted_progress           steps run since the last committed checkpoint of an attempt that
//                             failed: the next attempt runs them again
//   elastic_reshape           a recovery onto a different layout (an elastic shrink or regrowth)
//   other                     the rest (between steps, after the last one)
//
// Step time (data wait, compute, communication) is first *uncommitted*: it becomes productive,
// data_wait and communication when a checkpoint at or after its step commits, and wasted progress
// if the attempt fails first. So the buckets only grow (they are Prometheus counters) and the
// ledger never calls a step productive that a failure can still take back.
//
// Rank 0 reports, with each step, its cumulative time per phase (Progress.rank_time); the ledger
// charges the differences, and what the rank did not account for (report latency, a daemon
// starting the rank) to placement before the first step and to `other` after it. The sum of the
// buckets and the uncommitted time equals the wall time accounted, always. Pure: times are
// arguments, so tests need no clock.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

enum class GoodputBucket : int {
  kQueued,
  kPlacement,
  kStartup,
  kDataWait,
  kProductive,
  kCommunication,
  kCheckpointSave,
  kEvaluation,
  kFailureDetection,
  kRecovery,
  kWastedProgress,
  kElasticReshape,
  kOther,
};
inline constexpr int kGoodputBuckets = 13;
// "queued", "placement_and_rendezvous", ...: the `bucket` label and Goodput.seconds' keys.
const char* GoodputBucketName(GoodputBucket bucket);

class GoodputLedger {
 public:
  // A job that could first run at `ready_ms`; queued until Placed.
  explicit GoodputLedger(int64_t ready_ms);
  // A ledger persisted as `saved` (the closed view, JobStatus.goodput) before a coordinator
  // restart, for a job now in `state`: the time since saved.accounted_ms goes to the bucket the
  // state implies, and the next report of a running attempt only sets the baseline.
  static GoodputLedger Restore(const loom::v1::Goodput& saved, loom::v1::JobState state);

  // An attempt of `world_size` ranks was placed. A recovery onto a world size other than the
  // attempt before it had is an elastic reshape.
  void Placed(int64_t now_ms, int world_size);
  // Rank 0's report after `step` with its cumulative phase times.
  void Progress(int64_t now_ms, int64_t step, const loom::v1::RankTime& rank_time);
  // A checkpoint of the current attempt at `step` committed: the step time up to it is safe.
  void Committed(int64_t step);
  // The attempt failed at `failed_at_ms` (clamped to the open interval) and it was detected now.
  void Failed(int64_t now_ms, int64_t failed_at_ms);
  // The job ended. A success commits every step; `final_save_seconds` (the final checkpoint's
  // save) is charged to checkpoint_save out of the time after the last report.
  void Ended(int64_t now_ms, bool succeeded, double final_save_seconds);

  bool ended() const { return ended_; }
  // Closed intervals only: what is persisted and exported as counters.
  loom::v1::Goodput Closed() const;
  // The live view: the open interval charged to the bucket it is most likely in (step time for a
  // running attempt is uncommitted).
  loom::v1::Goodput Snapshot(int64_t now_ms) const;

 private:
  struct PendingStep {
    int64_t step = 0;
    double data_wait = 0, compute = 0, communication = 0;
  };
  // The open interval's bucket; kUncommitted while an attempt runs steps.
  static constexpr int kUncommitted = kGoodputBuckets;

  void Charge(GoodputBucket bucket, double seconds);
  void Close(int64_t now_ms);       // the open interval [last_ms_, now_ms] to open_
  void DropPending();               // every uncommitted step to wasted progress
  double PendingSeconds() const;
  loom::v1::Goodput ToProto(const std::array<double, kGoodputBuckets>& seconds, double uncommitted,
                            int64_t accounted_ms) const;

  std::array<double, kGoodputBuckets> seconds_{};
  std::vector<PendingStep> pending_;
  int64_t last_ms_ = 0;
  int open_ = static_cast<int>(GoodputBucket::kQueued);
  // Before the current attempt's first report: its placement, rendezvous and load go to
  // placement/startup, or to recovery_bucket_ after a failure.
  bool before_first_report_ = false;
  bool recovering_ = false;
  GoodputBucket recovery_bucket_ = GoodputBucket::kRecovery;
  // The last report's cumulative phase times of the current attempt.
  loom::v1::RankTime baseline_;
  bool have_baseline_ = false;
  int world_size_ = 0;  // the last attempt's
  bool ended_ = false;
};

}  // namespace loom::coordinator
