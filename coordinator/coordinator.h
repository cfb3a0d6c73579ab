// The coordinator's brain: plans, jobs, workers and checkpoints, driven by events (a plan
// submitted, a worker registered, a heartbeat, progress, a checkpoint shard, a rank exit, a
// stream closed, a timer tick). The clock is injected and every event is a plain method call,
// so the logic is tested without gRPC; service.h connects it to the network.
//
// Every state change is written to the Store (one synced batch) before it is acknowledged or
// announced to workers. Messages to workers are queued under the lock and sent after it is
// released, so a slow worker stream never stalls the coordinator.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/heartbeat_datagram.h"
#include "common/stage_inputs.h"
#include "coordinator/failures.h"
#include "coordinator/goodput.h"
#include "coordinator/log_relay.h"
#include "coordinator/rendezvous.h"
#include "coordinator/run_history.h"
#include "coordinator/store.h"
#include "coordinator/straggler.h"
#include "loom/v1/coordinator.pb.h"
#include "loom/v1/coordinator_store.pb.h"

namespace loom::coordinator {

struct CoordinatorOptions {
  // Checkpoint root: an attempt writes under <root>/<plan_id>/<stage>/attempt-<N>
  // (Assignment.checkpoint_dir). The coordinator deletes the checkpoints retention no longer needs.
  std::string checkpoint_root;
  // Prepared data (`loom data prepare` output) for plans whose data.dir is empty.
  std::string prepared_data;
  // Directories every path a plan names must resolve inside (plan_files.h); empty: not confined
  // (loom-coordinator always sets them, unless --allow-any-path).
  std::vector<std::string> allowed_roots;
  // A plan that ended (succeeded, failed, cancelled) longer ago than this is forgotten: its store
  // records, run history, in-memory state and metric series (its checkpoint files stay on disk).
  // Zero: plans are kept forever.
  absl::Duration plan_retention = absl::ZeroDuration();
  absl::Duration heartbeat_interval = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  // With heartbeat datagrams (EnableHeartbeatDatagrams): how often a worker still sends a full
  // Heartbeat, listing its ranks, on its stream.
  absl::Duration full_heartbeat_interval = absl::Seconds(30);
  // After a restart: how long running attempts wait for their workers to reconnect and report
  // their ranks before they are rescheduled.
  absl::Duration adopt_grace = absl::Seconds(10);
  // The contents of <checkpoint_root>/.loom-storage-token (storage_proof.h). A worker must send it
  // when it registers, proving it sees the checkpoint root; empty: not checked (unit tests).
  std::string storage_token;
  // Draws the jitter of retry backoffs, uniform in [0, 1); null: a random generator (tests pass
  // their own to measure the waits).
  std::function<double()> jitter;
  // Run history points kept per job (run_history.h; `loom-coordinator --history-points`).
  int history_max_points = RunHistory::kDefaultMaxPoints;
};

// A worker's stream, as seen by the coordinator.
class WorkerLink {
 public:
  virtual ~WorkerLink() = default;
  // Sends one message; false when the stream is gone (the coordinator learns it via Disconnected).
  virtual bool Send(const loom::v1::CoordinatorMessage& message) = 0;
  // Ends the stream from the coordinator's side, without blocking: the worker was declared lost
  // (no heartbeat in time) while its stream may still be open, e.g. across a cut link or a stalled
  // process. The worker sees the stream end, reconnects and registers again, and the ranks it
  // still runs of a replaced attempt are aborted then.
  virtual void End() = 0;
};

// A snapshot for /metrics.
struct MetricsSnapshot {
  struct Job {
    std::string plan_id, stage;
    loom::v1::JobState state = loom::v1::JOB_STATE_UNSPECIFIED;
    int attempt = 0;
    std::vector<int> stragglers;  // ranks of the current attempt flagged as stragglers
    bool plan_active = false;     // its plan is ACTIVE
    int64_t plan_ended_ms = 0;    // when its plan ended (0 while active)
    int64_t last_checkpoint_ms = 0;  // when its last checkpoint was committed (0: none)
    int64_t last_checkpoint_bytes = 0;  // its size (0: unknown)
  };
  std::vector<Job> jobs;
  std::map<loom::v1::WorkerState, int> workers;
  std::map<std::string, double> heartbeat_age_seconds;  // connected workers
  // Every worker the coordinator knows (connected, lost or gone): its last heartbeat, Unix seconds.
  std::map<std::string, double> last_heartbeat_seconds;
  int pending_jobs = 0;
  int64_t checkpoints_committed = 0;
  // Committed checkpoints a resume found corrupt or incomplete, since this coordinator started.
  int64_t checkpoints_bad = 0;
  int64_t checkpoints_deleted = 0;
  int64_t checkpoint_save_failures = 0;
  std::map<loom::v1::PlanState, int> plans;
  // Failed attempts since this coordinator started, by (class, cause): coordinator/failures.h.
  std::map<std::pair<std::string, std::string>, int64_t> attempt_failures;
  // Reports from a worker's stream that were refused (Coordinator::FenceReport), by reason.
  std::map<std::string, int64_t> fenced_reports;
  // Heartbeat datagrams that changed nothing, by reason: unknown_connection, bad_mac, replayed
  // (OnHeartbeatDatagram); coordinator/main.cc adds malformed (HeartbeatReceiver::rejected).
  std::map<std::string, int64_t> dropped_datagrams;
  // Goodput ledgers (closed intervals: counters) of the jobs of active plans and of plans that
  // ended less than kGoodputRetention ago.
  struct JobGoodput {
    std::string plan_id, stage;
    loom::v1::Goodput goodput;
  };
  std::vector<JobGoodput> goodput;
};
// How long an ended plan's goodput series stay on /metrics.
inline constexpr int64_t kGoodputRetentionMs = 15 * 60 * 1000;

class Coordinator {
 public:
  using Clock = std::function<int64_t()>;  // Unix milliseconds

  // Loads the store's contents. Attempts that were running get `adopt_grace` to be re-adopted.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(Store* store, CoordinatorOptions options,
                                                             Clock clock);

  // --- client API (PlanService) ---
  // Validates, resolves and stores the plan and its jobs; returns the plan id.
  // `submitted_by`: who submitted it (PlanStatus.submitted_by), empty for an anonymous caller.
  absl::StatusOr<std::string> SubmitPlan(const loom::v1::TrainingPlan& plan, const std::string& source,
                                         const loom::v1::Principal& submitted_by = {});
  absl::StatusOr<loom::v1::GetPlanResponse> GetPlan(const std::string& plan_id);
  loom::v1::ListPlansResponse ListPlans(bool include_finished);
  absl::Status CancelPlan(const std::string& plan_id, const std::string& reason);
  loom::v1::ListWorkersResponse ListWorkers();
  // Stops (or resumes) placing ranks on a worker; NOT_FOUND for an unknown one.
  absl::StatusOr<loom::v1::WorkerStatus> DrainWorker(const std::string& worker_id, bool undrain);
  absl::StatusOr<loom::v1::ListCheckpointsResponse> ListCheckpoints(const std::string& plan_id,
                                                                    const std::string& stage);
  // Blocks until the plan changed after `*version` or `timeout` passed; updates `*version` and
  // returns the plan's status and the latest event message.
  absl::StatusOr<loom::v1::PlanEvent> WaitForChange(const std::string& plan_id, uint64_t* version,
                                                    absl::Duration timeout);

  // Part of a rank's log, read by the worker that holds it (coordinator_logs.cc); waits up to
  // `timeout` for the worker's answer.
  absl::StatusOr<loom::v1::ReadLogResponse> ReadRankLog(const loom::v1::ReadLogRequest& request,
                                                       absl::Duration timeout);

  // --- worker API (WorkerService) ---
  loom::v1::StorageInfo Storage() const;
  // Returns the connection id the other events of this stream carry.
  absl::StatusOr<int64_t> RegisterWorker(const loom::v1::RegisterWorker& request,
                                         std::shared_ptr<WorkerLink> link);
  void HandleWorkerMessage(const std::string& worker_id, int64_t connection,
                           const loom::v1::WorkerMessage& message);
  // The stream of `connection` ended (an older connection of a re-registered worker is ignored).
  void Disconnected(const std::string& worker_id, int64_t connection, const std::string& why);
  // Workers that register from now on are told to send heartbeats as datagrams to UDP `port`
  // (common/heartbeat_datagram.h), which the caller receives and hands to OnHeartbeatDatagram.
  void EnableHeartbeatDatagrams(int port);
  // What OnHeartbeatDatagram made of a datagram.
  enum class DatagramVerdict {
    kAccepted,           // the worker's heartbeat time is now
    kUnknownConnection,  // no live worker connection has that id
    kBadMac,             // not made with that connection's key
    kReplayed,           // its sequence number is not above the last accepted one (a copy, or late)
  };
  // A datagram heartbeat: the worker of that connection is alive, if the connection is live, the
  // MAC is that of the connection's key and the sequence number is above the last one accepted on
  // it. Anything else changes nothing.
  DatagramVerdict OnHeartbeatDatagram(const HeartbeatDatagram& beat);

  // Timers: heartbeat timeouts, adoption grace, scheduling. Call often (every ~100 ms).
  void Tick();

  RendezvousStore& rendezvous() { return rendezvous_; }
  // Each job's per-step figures (`loom metrics`), recorded as rank 0's progress arrives.
  RunHistory& history() { return history_; }
  MetricsSnapshot Metrics();

 private:
  struct Worker {
    loom::v1::WorkerStatus status;
    std::shared_ptr<WorkerLink> link;  // null when not connected
    int64_t connection = 0;
    // Keyed with `connection`'s key, for its datagrams' MACs.
    std::shared_ptr<HeartbeatMac> heartbeat_mac;
    uint64_t last_datagram_sequence = 0;  // the last accepted on `connection` (0: none yet)
    bool stopping = false;  // said Draining on `connection`: no new ranks until it registers again
    // device index -> rank running there (rank exits free the slot)
    std::map<int, loom::v1::RankRef> occupied;
  };
  struct PendingCheckpoint {
    loom::v1::CheckpointReport report;
    std::set<int> shards;
    int64_t bytes = 0;  // summed over the shards' reports
  };
  // A message for a worker, or (end) the end of its stream; handed over by Flush, outside mu_.
  struct Outgoing {
    std::shared_ptr<WorkerLink> link;
    loom::v1::CoordinatorMessage message;
    bool end = false;
  };

  Coordinator(Store* store, CoordinatorOptions options, Clock clock);
  // The connected worker whose current connection is `connection`, or null.
  Worker* LiveConnection(int64_t connection) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Event handlers (mu_ held).
  void OnHeartbeat(Worker& w, const loom::v1::Heartbeat& hb) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnProgress(const loom::v1::Progress& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnCheckpoint(const loom::v1::CheckpointReport& report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnRankExit(Worker& w, const loom::v1::RankExit& exit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fencing: a worker speaks only for the ranks placed on it in its job's current attempt (the
  // attempt number is the fencing token); a checkpoint report names a path under that attempt's
  // directory. Empty when `rank` may be reported by `worker_id`; otherwise the reason (the label
  // of loom_fenced_reports_total: unknown_job, stale_attempt, unknown_rank, wrong_worker,
  // checkpoint_path), counted and logged once per worker, job, attempt and rank, and the report is
  // not applied.
  // Frees the slot of `w` that `rank` held, if any.
  void ReleaseSlot(Worker& w, const loom::v1::RankRef& rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string FenceReport(const std::string& worker_id, const loom::v1::RankRef& rank, const char* what,
                          const std::string* checkpoint_path) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `w` lost and fails the attempts of its ranks. `end_stream`: also end its stream if it is
  // still open (false for a worker that said it leaves: its last rank exits still come).
  void WorkerLost(Worker& w, const std::string& why, bool end_stream = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Job helpers (mu_ held). `plan` and `index` name the job.
  loom::v1::PlanRecord* FindJob(const std::string& job_id, int* index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsCurrent(const loom::v1::RankRef& rank) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the current attempt after a failure: aborts its ranks; then FAILED for a plan fault, a
  // spent retry budget or max_attempts, else RECOVERING (placed again after the backoff).
  void FailAttempt(loom::v1::PlanRecord& plan, int index, const Failure& failure)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt failed resuming from job.resumed_from (corrupt or incomplete): marks that committed
  // checkpoint bad (persisted, listed so) and makes the newest good one of the stage the job's
  // last_checkpoint (none: start afresh). False when resumed_from is no committed checkpoint of
  // the job's that is still good.
  bool RetireBadCheckpoint(loom::v1::PlanRecord& plan, int index, const std::string& why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A rank of the attempt that just failed (not yet placed again) exits with a plan fault: the
  // job fails now instead of retrying (a peer's exit may have been reported first).
  void MaybeFailForPlanFault(const loom::v1::RankExit& exit, const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The current attempt's write lease: a key in its rendezvous namespace that a rank reads before
  // it commits or prunes a checkpoint (the attempt number is the fencing token). Dropped with the
  // attempt's other keys when it ends, so a rank of a replaced attempt (a partitioned host that
  // comes back) can write nothing.
  // Opens the attempt's rendezvous namespace with its secret (JobRuntime.rendezvous_secret; one
  // is made when missing) first.
  void GrantWriteLease(loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AbortRanks(loom::v1::PlanRecord& plan, int index, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetJobState(loom::v1::PlanRecord& plan, int index, loom::v1::JobState to, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails jobs whose dependencies can no longer succeed; updates the plan state.
  void SettlePlan(loom::v1::PlanRecord& plan) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static bool WritesCheckpoint(const loom::v1::PlanRecord& plan, int index);
  // SUCCEEDED once the stage's result is in: its final checkpoint committed (by this attempt or
  // an earlier one) and every rank exited cleanly; for an eval stage, every rank exited cleanly.
  void MaybeSucceed(loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks the job SUCCEEDED now, whatever its ranks still do (they are aborted): the final
  // checkpoint is committed, so a failure after it or an attempt with nothing left to do costs
  // nothing.
  void Succeed(loom::v1::PlanRecord& plan, int index, const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One input of a job (a reference of its resolved stage, common/stage_inputs.h): the stage it
  // names and which checkpoint of it, or a path.
  struct Dependency {
    StageInputRef ref;
    int stage = -1;     // index of the stage named; -1 for a path
    int64_t step = -1;  // that stage's checkpoint at this step; -1 for its final one (or dataset)
    std::string path;   // a path reference
  };
  // The inputs of the job at `index`, from plan.resolved(index); references to no stage of the
  // plan are left out (validation refused them).
  static std::vector<Dependency> Dependencies(const loom::v1::PlanRecord& plan, int index);
  // Inputs of a job whose dependencies succeeded; an error when a referenced step is missing.
  absl::StatusOr<loom::v1::StageInputs> ResolveInputs(const loom::v1::PlanRecord& plan, int index)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // <checkpoint_root>/<plan>/<stage>, and the attempt's own directory under it.
  std::string StageDir(const std::string& plan_id, const std::string& stage) const;
  std::string AttemptDir(const std::string& plan_id, const std::string& stage, int attempt) const;
  // Retention, which belongs to the coordinator (ranks never delete): after a commit of the job at
  // `index`, the stage's committed checkpoints that nothing needs any more are dropped from the
  // list and the store, then their directories are deleted (outside mu_, by Flush). Kept: the
  // newest checkpoint.keep_last good ones (0: all), the one the current attempt resumed from, and
  // every one a stage of the plan names (`stage@STEP`, the newest `last_k` of an averaging window).
  void ApplyRetention(loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Once the job at `index` has ended: deletes whatever its attempts wrote that is no committed
  // checkpoint (uncommitted saves, replaced attempts' directories).
  void SweepStageDir(const loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `doomed` from the committed list and the store (one synced write), then queues their
  // directories for deletion.
  void DropCheckpoints(loom::v1::PlanRecord& plan, const std::vector<loom::v1::CheckpointInfo>& doomed,
                       const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  loom::v1::Assignment MakeAssignment(const loom::v1::PlanRecord& plan, int index, int rank, int device,
                                      const loom::v1::StageInputs& inputs) const;

  void Persist(loom::v1::PlanRecord& plan, const loom::v1::CheckpointInfo* checkpoint = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PersistWorker(const Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Send(const std::string& worker_id, loom::v1::CoordinatorMessage message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Announce(loom::v1::PlanRecord& plan, const std::string& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RefreshWorkerStatus(Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job's last_failure and the failure counts the metrics export.
  void RecordFailure(loom::v1::JobStatus* job, const Failure& failure, int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A draw for a retry's jitter, in [0, 1).
  double Jitter() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends what was queued; call without mu_.
  void Flush() ABSL_LOCKS_EXCLUDED(mu_);

  Store* store_;
  const CoordinatorOptions options_;
  // options_.allowed_roots after symlinks and `..`, sent in every Assignment (read_roots).
  const std::vector<std::string> read_roots_;
  const Clock clock_;
  RendezvousStore rendezvous_;
  RunHistory history_;
  LogRelay log_relay_;

  absl::Mutex mu_;
  absl::Mutex flush_mu_;  // keeps messages to one worker in order across flushes
  std::map<std::string, loom::v1::PlanRecord> plans_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<loom::v1::CheckpointInfo>> checkpoints_ ABSL_GUARDED_BY(mu_);  // by plan
  std::map<std::string, PendingCheckpoint> pending_checkpoints_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Worker> workers_ ABSL_GUARDED_BY(mu_);
  // Attempts loaded at start, waiting for their ranks to be re-adopted: job_id -> deadline.
  std::map<std::string, int64_t> adopt_deadline_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::set<int>> adopted_ ABSL_GUARDED_BY(mu_);
  // Ranks that reported progress in the current attempt (SCHEDULED -> RUNNING once all did).
  std::map<std::string, std::set<int>> progressed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> last_event_ ABSL_GUARDED_BY(mu_);  // by plan
  std::map<std::string, uint64_t> plan_version_ ABSL_GUARDED_BY(mu_);
  std::vector<Outgoing> outbox_ ABSL_GUARDED_BY(mu_);
  // Deletions Flush carries out after mu_ is released: a directory to remove whole, or (sweep) a
  // stage directory to clear of everything but the listed paths.
  struct Deletion {
    std::string path;
    std::vector<std::string> keep;  // for a sweep: the paths it must leave
    bool sweep = false;
  };
  std::vector<Deletion> deletions_ ABSL_GUARDED_BY(mu_);
  // Step progress of each placed job, for hang detection: when its rank 0 last reported a new
  // step (or the attempt was placed), that step, and the recent times per step (across attempts).
  struct StepClock {
    int64_t last_step_ms = 0;
    int64_t last_step = -1;  // none yet in this attempt
    std::vector<double> recent_step_seconds;
    double Median() const;
  };
  std::map<std::string, StepClock> step_clocks_ ABSL_GUARDED_BY(mu_);  // by job
  // Goodput ledgers of jobs that can run or are running, by job (an ended job's is in its
  // JobStatus.goodput). Ledger() makes one when the job's dependencies are done, or restores it
  // from JobStatus.goodput after a restart.
  std::map<std::string, GoodputLedger> goodput_ ABSL_GUARDED_BY(mu_);
  GoodputLedger* Ledger(loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The status with each live job's goodput as of now.
  void LiveGoodput(loom::v1::PlanStatus* status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Straggler detection of each placed attempt (coordinator_stragglers.cc), by job.
  std::map<std::string, StragglerDetector> stragglers_ ABSL_GUARDED_BY(mu_);
  // Feeds a rank's compute time per step to its attempt's detector; updates the job's stragglers
  // (and logs) when the verdict changes.
  void WatchStragglers(loom::v1::PlanRecord& plan, int index, const loom::v1::Progress& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The attempt ended: its detector and the job's stragglers go.
  void ForgetStragglers(loom::v1::PlanRecord& plan, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t last_hang_scan_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // Plan retention (options_.plan_retention). Ended plans by (ended_ms, plan id), oldest first:
  // Tick forgets those past the retention, at most kExpiriesPerTick at a time so that a backlog
  // (the first start with a retention, or a long outage) never stalls heartbeats and scheduling.
  std::set<std::pair<int64_t, std::string>> ended_plans_ ABSL_GUARDED_BY(mu_);
  static constexpr int kExpiriesPerTick = 4;
  void ExpirePlans(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets one ended plan: its run history, then its records (one synced batch), then what is
  // kept of it in memory. False (and everything kept) when the store refused.
  bool ForgetPlan(const std::string& plan_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans this process forgot, by id: when they ended (for the NOT_FOUND message). Bounded: the
  // oldest are dropped past kExpiredRemembered (then, and after a restart, the message is told
  // from the plan id's sequence number).
  std::map<std::string, int64_t> expired_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> expired_order_ ABSL_GUARDED_BY(mu_);
  static constexpr size_t kExpiredRemembered = 10000;
  // NOT_FOUND for a plan id that is not (or no longer) here: an expired plan's says so.
  absl::Status NoPlan(const std::string& plan_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fails the attempts of jobs that made no step for longer than their plan's HangPolicy allows.
  void DetectHungJobs(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t checkpoints_deleted_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t checkpoint_save_failures_ ABSL_GUARDED_BY(mu_) = 0;
  // Intervals without a commit after which a running job carries a warning.
  static constexpr int kOverdueIntervals = 3;
  int64_t plan_seq_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t next_connection_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t checkpoints_committed_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t checkpoints_bad_ ABSL_GUARDED_BY(mu_) = 0;
  int pending_jobs_ ABSL_GUARDED_BY(mu_) = 0;
  bool dirty_schedule_ ABSL_GUARDED_BY(mu_) = true;
  int heartbeat_udp_port_ ABSL_GUARDED_BY(mu_) = 0;
  // Connection id -> worker id, for the datagrams of connected workers.
  std::unordered_map<int64_t, std::string> by_connection_ ABSL_GUARDED_BY(mu_);
  // The earliest time a job waiting out a retry backoff may be placed (0: none waits).
  int64_t next_retry_ms_ ABSL_GUARDED_BY(mu_) = 0;
  // Tick's heartbeat-timeout scan: no connected worker's last heartbeat is older than
  // earliest_heartbeat_ms_ (as of the scan at last_heartbeat_scan_ms_), so the scan is skipped
  // while none can have timed out.
  int64_t earliest_heartbeat_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_heartbeat_scan_ms_ ABSL_GUARDED_BY(mu_) = 0;
  absl::BitGen bitgen_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, int64_t> attempt_failures_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> fenced_reports_ ABSL_GUARDED_BY(mu_);
  // Datagrams OnHeartbeatDatagram dropped, by reason (MetricsSnapshot::dropped_datagrams).
  int64_t datagrams_unknown_connection_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t datagrams_bad_mac_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t datagrams_replayed_ ABSL_GUARDED_BY(mu_) = 0;
  // (worker, reason, rank) already logged by FenceReport; bounded (cleared when full).
  std::set<std::string> fenced_logged_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::coordinator
