#include "coordinator/metrics.h"

#include "absl/strings/str_cat.h"
#include "common/proto_names.h"

namespace loom::coordinator {

CoordinatorMetrics::CoordinatorMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      job_state_(prometheus::BuildGauge()
                     .Name("loom_job_state")
                     .Help("1 for the state each job is in, 0 for the others")
                     .Register(*registry_)),
      job_attempts_(prometheus::BuildCounter()
                        .Name("loom_job_attempts_total")
                        .Help("Attempts started per job")
                        .Register(*registry_)),
      workers_(prometheus::BuildGauge().Name("loom_workers").Help("Workers by state").Register(*registry_)),
      heartbeat_age_(prometheus::BuildGauge()
                         .Name("loom_worker_heartbeat_age_seconds")
                         .Help("Seconds since each connected worker's last heartbeat")
                         .Register(*registry_)),
      plans_(prometheus::BuildGauge().Name("loom_plans").Help("Plans by state").Register(*registry_)),
      attempt_failures_(prometheus::BuildCounter()
                            .Name("loom_attempt_failures_total")
                            .Help("Failed job attempts by whose fault (class: cluster or plan) and cause "
                                  "(worker_lost, worker_left, rank_lost, signal, timeout, io, checkpoint_bad, crash, input, config, repeat)")
                            .Register(*registry_)),
      pending_jobs_(prometheus::BuildGauge()
                        .Name("loom_scheduler_pending_jobs")
                        .Help("Jobs waiting for dependencies or slots (PENDING or RECOVERING)")
                        .Register(*registry_)
                        .Add({})),
      checkpoints_(prometheus::BuildCounter()
                       .Name("loom_checkpoints_committed_total")
                       .Help("Checkpoints committed (every shard durable)")
                       .Register(*registry_)
                       .Add({})),
      checkpoints_bad_(prometheus::BuildCounter()
                           .Name("loom_checkpoints_bad_total")
                           .Help("Committed checkpoints a resume found corrupt or incomplete (each is retired; "
                                 "the job falls back to the one before)")
                           .Register(*registry_)
                           .Add({})),
      checkpoints_deleted_(prometheus::BuildCounter()
                               .Name("loom_checkpoints_deleted_total")
                               .Help("Committed checkpoints deleted by retention (checkpoint.keep_last), none a "
                                     "later stage still needed")
                               .Register(*registry_)
                               .Add({})),
      checkpoint_save_failures_(prometheus::BuildCounter()
                                    .Name("loom_checkpoint_save_failures_total")
                                    .Help("Checkpoint saves that failed (a full disk, an I/O error); training "
                                          "went on and the next interval tried again")
                                    .Register(*registry_)
                                    .Add({})),
      goodput_(*registry_) {}

namespace {

// Counters follow the coordinator's running totals.
void Advance(prometheus::Counter& counter, int64_t total, int64_t* seen) {
  if (total > *seen) {
    counter.Increment(static_cast<double>(total - *seen));
    *seen = total;
  }
}

}  // namespace

void CoordinatorMetrics::Update(const MetricsSnapshot& s) {
  static constexpr loom::v1::JobState kStates[] = {
      loom::v1::JOB_STATE_PENDING,    loom::v1::JOB_STATE_SCHEDULED, loom::v1::JOB_STATE_RUNNING,
      loom::v1::JOB_STATE_RECOVERING, loom::v1::JOB_STATE_SUCCEEDED, loom::v1::JOB_STATE_FAILED,
      loom::v1::JOB_STATE_CANCELLED};
  for (const MetricsSnapshot::Job& job : s.jobs) {
    for (loom::v1::JobState state : kStates) {
      job_state_.Add({{"plan", job.plan_id}, {"stage", job.stage}, {"state", EnumName(state)}})
          .Set(job.state == state ? 1 : 0);
    }
    const std::string key = absl::StrCat(job.plan_id, "/", job.stage);
    int& seen = attempts_seen_[key];
    auto& counter = job_attempts_.Add({{"plan", job.plan_id}, {"stage", job.stage}});
    if (job.attempt > seen) {
      counter.Increment(job.attempt - seen);
      seen = job.attempt;
    }
  }
  for (loom::v1::WorkerState state :
       {loom::v1::WORKER_STATE_IDLE, loom::v1::WORKER_STATE_BUSY, loom::v1::WORKER_STATE_LOST}) {
    auto it = s.workers.find(state);
    workers_.Add({{"state", EnumName(state)}}).Set(it == s.workers.end() ? 0 : it->second);
  }
  for (loom::v1::PlanState state : {loom::v1::PLAN_STATE_ACTIVE, loom::v1::PLAN_STATE_SUCCEEDED,
                                    loom::v1::PLAN_STATE_FAILED, loom::v1::PLAN_STATE_CANCELLED}) {
    auto it = s.plans.find(state);
    plans_.Add({{"state", EnumName(state)}}).Set(it == s.plans.end() ? 0 : it->second);
  }
  // Only connected workers have a heartbeat age; drop the series of those that left.
  for (auto it = heartbeat_gauges_.begin(); it != heartbeat_gauges_.end();) {
    if (!s.heartbeat_age_seconds.contains(it->first)) {
      heartbeat_age_.Remove(it->second);
      it = heartbeat_gauges_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [worker, age] : s.heartbeat_age_seconds) {
    prometheus::Gauge*& g = heartbeat_gauges_[worker];
    if (g == nullptr) g = &heartbeat_age_.Add({{"worker", worker}});
    g->Set(age);
  }
  for (const auto& [key, count] : s.attempt_failures) {
    int64_t& seen = failures_seen_[key];
    // A failure moved to another class before it was exported is not; once exported it stays
    // (a counter does not go down), and later ones of its kind count from there.
    if (count < seen) seen = count;
    if (count > seen) {
      attempt_failures_.Add({{"class", key.first}, {"cause", key.second}}).Increment(static_cast<double>(count - seen));
      seen = count;
    }
  }
  pending_jobs_.Set(s.pending_jobs);
  Advance(checkpoints_bad_, s.checkpoints_bad, &checkpoints_bad_seen_);
  Advance(checkpoints_, s.checkpoints_committed, &checkpoints_seen_);
  Advance(checkpoints_deleted_, s.checkpoints_deleted, &checkpoints_deleted_seen_);
  Advance(checkpoint_save_failures_, s.checkpoint_save_failures, &checkpoint_save_failures_seen_);
  goodput_.Update(s.goodput);
}

}  // namespace loom::coordinator
