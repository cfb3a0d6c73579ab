#include "coordinator/metrics.h"

#include <algorithm>
#include <functional>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/command_line.h"
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
      fenced_reports_(prometheus::BuildCounter()
                          .Name("loom_fenced_reports_total")
                          .Help("Reports on a worker's stream refused by the fence, by reason: unknown_job, "
                                "stale_attempt (a rank of an ended attempt), unknown_rank, wrong_worker (a rank "
                                "placed on another worker), checkpoint_path (outside the attempt's directory)")
                          .Register(*registry_)),
      dropped_datagrams_(prometheus::BuildCounter()
                             .Name("loom_heartbeat_datagrams_dropped_total")
                             .Help("Heartbeat datagrams that changed nothing, by reason: malformed (not a "
                                   "version-2 heartbeat), unknown_connection (no live worker connection has "
                                   "its id: routine after a reconnect), bad_mac (not signed with that "
                                   "connection's key: forged), replayed (a sequence number already seen)")
                             .Register(*registry_)),
      straggler_(prometheus::BuildGauge()
                     .Name("loom_rank_straggler")
                     .Help("1 while a rank's compute time per step stays >= 1.3x its peers' median over the "
                           "last 20 steps (coordinator/straggler.h); no series otherwise")
                     .Register(*registry_)),
      last_heartbeat_(prometheus::BuildGauge()
                          .Name("loom_worker_last_heartbeat_timestamp_seconds")
                          .Help("Unix time of each known worker's last heartbeat, kept after it is lost "
                                "(time() - this is how long it has been silent)")
                          .Register(*registry_)),
      last_checkpoint_(prometheus::BuildGauge()
                           .Name("loom_job_last_checkpoint_timestamp_seconds")
                           .Help("Unix time the job's last checkpoint was committed (absent before its first)")
                           .Register(*registry_)),
      last_checkpoint_bytes_(prometheus::BuildGauge()
                                 .Name("loom_job_last_checkpoint_bytes")
                                 .Help("Size of the job's last committed checkpoint (its files, as its writer "
                                       "reported them; absent when unknown)")
                                 .Register(*registry_)),
      build_info_(prometheus::BuildGauge()
                      .Name("loom_build_info")
                      .Help("1, labelled with the version of Loom this coordinator runs")
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
      goodput_(*registry_) {
  build_info_.Add({{"version", loom::Version()}}).Set(1);
}

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
  std::map<std::string, prometheus::Gauge*> stragglers;
  // The plans whose jobs are shown: live ones and the kRecentEndedPlans that ended last.
  std::map<std::string, int64_t> ended;  // plan -> ended_ms
  for (const MetricsSnapshot::Job& job : s.jobs) {
    if (!job.plan_active) ended[job.plan_id] = job.plan_ended_ms;
  }
  std::vector<std::pair<int64_t, std::string>> by_end;
  for (const auto& [plan, ms] : ended) by_end.emplace_back(ms, plan);
  std::sort(by_end.begin(), by_end.end(), std::greater<>());
  std::set<std::string> hidden;
  for (size_t i = kRecentEndedPlans; i < by_end.size(); ++i) hidden.insert(by_end[i].second);
  std::set<std::string> shown_jobs;
  for (const MetricsSnapshot::Job& job : s.jobs) {
    for (int rank : job.stragglers) {
      const std::string key = absl::StrCat(job.plan_id, "/", job.stage, "/", rank);
      auto it = straggler_gauges_.find(key);
      prometheus::Gauge* g = it != straggler_gauges_.end()
                                 ? it->second
                                 : &straggler_.Add({{"plan", job.plan_id}, {"stage", job.stage}, {"rank", absl::StrCat(rank)}});
      g->Set(1);
      stragglers[key] = g;
    }
    if (hidden.contains(job.plan_id)) continue;
    const std::string key = absl::StrCat(job.plan_id, "/", job.stage);
    shown_jobs.insert(key);
    JobSeries& series = job_series_[key];
    const prometheus::Labels labels = {{"plan", job.plan_id}, {"stage", job.stage}};
    if (series.states.empty()) {
      for (loom::v1::JobState state : kStates) {
        prometheus::Labels l = labels;
        l["state"] = EnumName(state);
        series.states.push_back(&job_state_.Add(l));
      }
      series.attempts = &job_attempts_.Add(labels);
    }
    for (size_t i = 0; i < std::size(kStates); ++i) series.states[i]->Set(job.state == kStates[i] ? 1 : 0);
    if (job.attempt > series.attempts_seen) {
      series.attempts->Increment(job.attempt - series.attempts_seen);
      series.attempts_seen = job.attempt;
    }
    if (job.last_checkpoint_ms > 0) {
      if (series.last_checkpoint == nullptr) series.last_checkpoint = &last_checkpoint_.Add(labels);
      series.last_checkpoint->Set(static_cast<double>(job.last_checkpoint_ms) / 1000.0);
    }
    if (job.last_checkpoint_bytes > 0) {
      if (series.last_checkpoint_bytes == nullptr) series.last_checkpoint_bytes = &last_checkpoint_bytes_.Add(labels);
      series.last_checkpoint_bytes->Set(static_cast<double>(job.last_checkpoint_bytes));
    }
  }
  for (auto it = job_series_.begin(); it != job_series_.end();) {
    if (shown_jobs.contains(it->first)) {
      ++it;
      continue;
    }
    for (prometheus::Gauge* g : it->second.states) job_state_.Remove(g);
    if (it->second.attempts != nullptr) job_attempts_.Remove(it->second.attempts);
    if (it->second.last_checkpoint != nullptr) last_checkpoint_.Remove(it->second.last_checkpoint);
    if (it->second.last_checkpoint_bytes != nullptr) last_checkpoint_bytes_.Remove(it->second.last_checkpoint_bytes);
    it = job_series_.erase(it);
  }
  // A rank no longer flagged (or whose attempt ended) loses its series.
  for (const auto& [key, gauge] : straggler_gauges_) {
    if (!stragglers.contains(key)) straggler_.Remove(gauge);
  }
  straggler_gauges_ = std::move(stragglers);
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
  // Every known worker's last heartbeat, lost ones included (an alert on a lost worker needs it);
  // a worker the coordinator no longer knows loses its series.
  for (auto it = last_heartbeat_gauges_.begin(); it != last_heartbeat_gauges_.end();) {
    if (!s.last_heartbeat_seconds.contains(it->first)) {
      last_heartbeat_.Remove(it->second);
      it = last_heartbeat_gauges_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [worker, seconds] : s.last_heartbeat_seconds) {
    prometheus::Gauge*& g = last_heartbeat_gauges_[worker];
    if (g == nullptr) g = &last_heartbeat_.Add({{"worker", worker}});
    g->Set(seconds);
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
  for (const auto& [reason, count] : s.fenced_reports) {
    int64_t& seen = fenced_seen_[reason];
    if (count > seen) {
      fenced_reports_.Add({{"reason", reason}}).Increment(static_cast<double>(count - seen));
      seen = count;
    }
  }
  for (const auto& [reason, count] : s.dropped_datagrams) {
    int64_t& seen = dropped_datagrams_seen_[reason];
    // Every reason has a series from the start (0), so a rate() sees the first forged datagram.
    prometheus::Counter& counter = dropped_datagrams_.Add({{"reason", reason}});
    if (count > seen) {
      counter.Increment(static_cast<double>(count - seen));
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
