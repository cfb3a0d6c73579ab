// Scheduling half of Coordinator: dependencies between stages, inputs and assignments, and the
// pass that places waiting jobs (scheduler.h does the placement itself).
#include <algorithm>
#include <iterator>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_ref.h"
#include "common/logging.h"
#include "common/stage_inputs.h"
#include "coordinator/coordinator.h"
#include "coordinator/job_state.h"
#include "coordinator/scheduler.h"

namespace loom::coordinator {

using loom::v1::JobStatus;
using loom::v1::PlanRecord;

namespace {

constexpr char kLog[] = "coordinator";

std::string AttemptKey(const std::string& job_id, int attempt) { return absl::StrCat(job_id, "#", attempt); }

}  // namespace

std::vector<Coordinator::Dependency> Coordinator::Dependencies(const PlanRecord& plan, int index) {
  std::vector<Dependency> deps;
  for (StageInputRef& ref : StageInputRefs(plan.resolved(index).stage())) {
    Dependency d;
    if (ref.slot == InputSlot::kDataset) {
      d.stage = FindStage(plan.plan(), ref.text);  // a stage name: its dataset is its final "checkpoint"
    } else {
      absl::StatusOr<CheckpointRef> parsed = ParseCheckpointRef(ref.text);
      if (!parsed.ok()) continue;  // validation already refused it
      if (parsed->kind == CheckpointRef::Kind::kPath) {
        d.path = parsed->path;
      } else {
        d.stage = FindStage(plan.plan(), parsed->stage);
        d.step = parsed->step;
      }
    }
    if (d.stage < 0 && d.path.empty()) continue;  // names no stage of the plan: validation refused it
    d.ref = std::move(ref);
    deps.push_back(std::move(d));
  }
  return deps;
}

absl::StatusOr<loom::v1::StageInputs> Coordinator::ResolveInputs(const PlanRecord& plan, int index) {
  loom::v1::StageInputs inputs;
  for (const Dependency& d : Dependencies(plan, index)) {
    if (d.stage < 0) {
      SetInput(d.ref, d.path, &inputs);
      continue;
    }
    const JobStatus& dep = plan.status().jobs(d.stage);
    if (d.step < 0) {
      SetInput(d.ref, dep.final_checkpoint().path(), &inputs);
      continue;
    }
    const loom::v1::CheckpointInfo* found = nullptr;
    for (const auto& c : checkpoints_[plan.status().plan_id()]) {
      if (c.stage() == dep.stage() && c.step() == d.step) found = &c;
    }
    if (found == nullptr) {
      return absl::NotFoundError(
          absl::StrCat(d.ref.field, ": stage '", dep.stage(), "' committed no checkpoint at step ", d.step));
    }
    if (!found->bad().empty()) {
      return absl::DataLossError(absl::StrCat(d.ref.field, ": stage '", dep.stage(), "''s checkpoint at step ",
                                              d.step, " is bad (", found->bad(),
                                              "); name another step or the stage's final checkpoint"));
    }
    SetInput(d.ref, found->path(), &inputs);
  }
  // average {last_k: K}: the last K good committed checkpoints of the `from` stage, oldest first
  // (one a resume found bad is never read again).
  const loom::v1::Stage& stage = plan.resolved(index).stage();
  if (stage.kind() == loom::v1::STAGE_KIND_AVERAGE && stage.average().has_last_k()) {
    const std::string& from = stage.from();
    std::vector<const loom::v1::CheckpointInfo*> found;
    int bad = 0;
    for (const auto& c : checkpoints_[plan.status().plan_id()]) {
      if (c.stage() != from) continue;
      if (c.bad().empty()) {
        found.push_back(&c);
      } else {
        ++bad;
      }
    }
    std::sort(found.begin(), found.end(), [](auto* a, auto* b) { return a->step() < b->step(); });
    const int k = stage.average().last_k();
    if (static_cast<int>(found.size()) < k) {
      return absl::NotFoundError(absl::StrCat("average.last_k: stage '", from, "' committed ", found.size(),
                                              " good checkpoints", bad > 0 ? absl::StrCat(" (", bad, " bad)") : "",
                                              ", fewer than ", k));
    }
    for (int i = 0; i < k; ++i) inputs.add_checkpoints(found[found.size() - k + i]->path());
  }
  return inputs;
}

loom::v1::Assignment Coordinator::MakeAssignment(const PlanRecord& plan, int index, int rank, int device,
                                                 const loom::v1::StageInputs& inputs) const {
  const JobStatus& job = plan.status().jobs(index);
  const loom::v1::ResolvedStage& resolved = plan.resolved(index);
  loom::v1::Assignment a;
  a.mutable_rank()->set_job_id(job.job_id());
  a.mutable_rank()->set_attempt(job.attempt());
  a.mutable_rank()->set_rank(rank);
  a.set_plan_id(plan.status().plan_id());
  *a.mutable_stage() = resolved.stage();
  *a.mutable_model() = resolved.model();
  if (resolved.has_teacher_model()) *a.mutable_teacher_model() = resolved.teacher_model();
  *a.mutable_data() = plan.plan().data();
  if (a.data().dir().empty()) a.mutable_data()->set_dir(options_.prepared_data);
  a.set_seed(resolved.seed());
  const int tp = a.stage().parallel().tp(), pp = a.stage().parallel().pp();
  // The attempt's placement decides dp: fewer ranks than the stage asks for when elastic.
  const int placed = plan.runtime(index).ranks_size();
  const int dp = placed > 0 ? placed / std::max(1, tp * pp) : a.stage().parallel().dp();
  a.mutable_stage()->mutable_parallel()->set_dp(dp);
  loom::v1::ParallelLayout* layout = a.mutable_layout();
  layout->set_world_size(dp * tp * pp);
  layout->set_dp(dp);
  layout->set_tp(tp);
  layout->set_pp(pp);
  layout->set_tp_rank(rank % tp);
  layout->set_pp_rank((rank / tp) % pp);
  layout->set_dp_rank(rank / (tp * pp));
  a.set_rendezvous_prefix(absl::StrCat(AttemptKey(job.job_id(), job.attempt()), "/"));
  a.set_rendezvous_secret(plan.runtime(index).rendezvous_secret());
  a.set_resume_from(job.last_checkpoint().path());
  a.set_cache_dir(StageDir(plan.status().plan_id(), job.stage()));
  a.set_checkpoint_dir(AttemptDir(plan.status().plan_id(), job.stage(), job.attempt()));
  *a.mutable_inputs() = inputs;
  a.set_device_index(device);
  // The ranks confine their reads of plan-named files to the same roots (common/confined_read.h).
  for (const std::string& root : read_roots_) a.add_read_roots(root);
  return a;
}

void Coordinator::ScheduleLocked() {
  dirty_schedule_ = false;
  next_retry_ms_ = 0;
  const int64_t now = clock_();
  struct Candidate {
    PlanRecord* plan;
    int index;
  };
  std::vector<Candidate> candidates;
  std::vector<PlanRecord*> order;
  for (auto& [id, plan] : plans_) {
    if (plan.status().state() == loom::v1::PLAN_STATE_ACTIVE) order.push_back(&plan);
  }
  std::sort(order.begin(), order.end(), [](const PlanRecord* a, const PlanRecord* b) {
    if (a->plan().priority() != b->plan().priority()) return a->plan().priority() > b->plan().priority();
    return a->seq() < b->seq();
  });
  int pending = 0;
  for (PlanRecord* plan : order) {
    for (int i = 0; i < plan->status().jobs_size(); ++i) {
      JobStatus* job = plan->mutable_status()->mutable_jobs(i);
      if (job->state() != loom::v1::JOB_STATE_PENDING && job->state() != loom::v1::JOB_STATE_RECOVERING)
        continue;
      ++pending;
      std::vector<std::string> waiting;  // each stage once, in the order the stage names them
      for (const Dependency& d : Dependencies(*plan, i)) {
        if (d.stage < 0 || plan->status().jobs(d.stage).state() == loom::v1::JOB_STATE_SUCCEEDED) continue;
        const std::string& name = plan->status().jobs(d.stage).stage();
        if (std::find(waiting.begin(), waiting.end(), name) == waiting.end()) waiting.push_back(name);
      }
      if (!waiting.empty()) {
        const std::string reason =
            absl::StrCat("waiting for stage ", absl::StrJoin(waiting, ", "), " to finish");
        if (job->reason() != reason) {
          job->set_reason(reason);
          Persist(*plan);
        }
        continue;
      }
      // Nothing left to do: the final checkpoint was committed before the job came back here (by
      // a coordinator that did not yet settle such jobs at once, say).
      if (WritesCheckpoint(*plan, i) && job->has_final_checkpoint()) {
        --pending;
        Succeed(*plan, i, absl::StrCat("final checkpoint ", job->final_checkpoint().path(), " (nothing left to do)"));
        continue;
      }
      Ledger(*plan, i);  // from now on its time is accounted
      // A retry waits out its backoff (the job's reason says until when).
      if (const int64_t not_before = plan->runtime(i).retry_not_before_ms(); not_before > now) {
        next_retry_ms_ = next_retry_ms_ > 0 ? std::min(next_retry_ms_, not_before) : not_before;
        continue;
      }
      candidates.push_back({plan, i});
    }
  }
  pending_jobs_ = pending;
  if (candidates.empty()) return;

  std::vector<FreeWorker> free;
  for (auto& [id, w] : workers_) {
    if (w.link == nullptr || w.status.draining() || w.stopping) continue;  // lost, drained, or stopping
    FreeWorker f;
    f.worker_id = id;
    f.total_slots = w.status.slots();
    for (int device = 0; device < w.status.devices_size(); ++device) {
      if (!w.occupied.contains(device)) f.free_devices.push_back(device);
    }
    free.push_back(std::move(f));
  }
  // Slots of live workers, and of workers this coordinator has seen and lost (still listed, with
  // no link): an elastic job shrinks only for capacity that went away, not while the cluster is
  // still coming up.
  int live_slots = 0, lost_slots = 0;
  for (const FreeWorker& f : free) live_slots += f.total_slots;
  for (const auto& [id, w] : workers_) {
    if (w.link == nullptr) lost_slots += w.status.slots();
  }
  std::vector<JobRequest> requests;
  for (const Candidate& c : candidates) {
    const loom::v1::Stage& stage = c.plan->resolved(c.index).stage();
    JobRequest r;
    r.job_id = c.plan->status().jobs(c.index).job_id();
    r.dp = std::max(1, stage.parallel().dp());
    r.tp = std::max(1, stage.parallel().tp());
    r.pp = std::max(1, stage.parallel().pp());
    // Elastic: after a failed attempt (a node lost, say), or when lost workers leave the live ones
    // too few for the full layout, the job may run on fewer data-parallel ranks.
    r.elastic = stage.parallel().elastic() &&
                (c.plan->status().jobs(c.index).attempt() > 0 ||
                 (r.world_size() > live_slots && r.world_size() <= live_slots + lost_slots));
    requests.push_back(r);
  }
  const std::vector<ScheduleDecision> decisions = Schedule(requests, std::move(free));
  for (size_t k = 0; k < decisions.size(); ++k) {
    PlanRecord& plan = *candidates[k].plan;
    const int i = candidates[k].index;
    JobStatus* job = plan.mutable_status()->mutable_jobs(i);
    const ScheduleDecision& d = decisions[k];
    if (!d.placed) {
      if (job->reason() != d.reason) {
        job->set_reason(d.reason);
        Persist(plan);
        Announce(plan, "");
      }
      continue;
    }
    absl::StatusOr<loom::v1::StageInputs> inputs = ResolveInputs(plan, i);
    if (!inputs.ok()) {
      plan.mutable_runtime(i)->set_last_error(std::string(inputs.status().message()));
      SetJobState(plan, i, loom::v1::JOB_STATE_FAILED, std::string(inputs.status().message()));
      SettlePlan(plan);
      Persist(plan);
      Announce(plan, absl::StrCat(job->stage(), ": failed: ", inputs.status().message()));
      continue;
    }
    job->set_attempt(job->attempt() + 1);
    *job->mutable_inputs() = *inputs;
    job->set_resumed_from(job->last_checkpoint().path());
    job->clear_rank_workers();
    job->clear_progress();
    loom::v1::JobRuntime* runtime = plan.mutable_runtime(i);
    runtime->clear_ranks();
    // The fencing token of the attempt's rendezvous: only its own ranks get it.
    runtime->set_rendezvous_secret(NewRendezvousSecret());
    runtime->set_attempt_started_ms(now);
    runtime->set_retry_not_before_ms(0);
    progressed_.erase(job->job_id());
    adopted_.erase(job->job_id());
    adopt_deadline_.erase(job->job_id());
    std::set<std::string> used;
    for (size_t r = 0; r < d.ranks.size(); ++r) {
      loom::v1::RankPlacement* p = runtime->add_ranks();
      p->set_rank(static_cast<int>(r));
      p->set_worker_id(d.ranks[r].worker_id);
      p->set_device_index(d.ranks[r].device_index);
      job->add_rank_workers(d.ranks[r].worker_id);
      used.insert(d.ranks[r].worker_id);
    }
    // Up to kNamedWorkers workers by name: a 4,096-rank job's reason would otherwise name hundreds
    // or thousands (the reason is in every status, event and stored transition, and the log);
    // rank_workers lists them all.
    constexpr size_t kNamedWorkers = 8;
    std::string where = absl::StrJoin(used, ", ");
    if (used.size() > kNamedWorkers) {
      where = absl::StrCat(used.size(), " workers: ",
                           absl::StrJoin(used.begin(), std::next(used.begin(), kNamedWorkers), ", "), " and ",
                           used.size() - kNamedWorkers, " more");
    }
    const int full_dp = std::max(1, plan.resolved(i).stage().parallel().dp());
    const std::string reason = absl::StrCat(
        "attempt ", job->attempt(), ": ", d.ranks.size(), " ranks on ", where,
        d.dp < full_dp ? absl::StrCat(" (elastic: dp ", d.dp, " of ", full_dp, ", the same global batch)") : "",
        job->resumed_from().empty() ? "" : absl::StrCat(", resuming from ", job->resumed_from()));
    SetJobState(plan, i, loom::v1::JOB_STATE_SCHEDULED, reason);
    if (GoodputLedger* ledger = Ledger(plan, i)) ledger->Placed(now, static_cast<int>(d.ranks.size()));
    Persist(plan);
    GrantWriteLease(plan, i);
    StepClock& clock = step_clocks_[job->job_id()];
    clock.last_step_ms = now;
    clock.last_step = -1;
    for (size_t r = 0; r < d.ranks.size(); ++r) {
      Worker& w = workers_[d.ranks[r].worker_id];
      loom::v1::CoordinatorMessage m;
      *m.mutable_assign() = MakeAssignment(plan, i, static_cast<int>(r), d.ranks[r].device_index, *inputs);
      w.occupied[d.ranks[r].device_index] = m.assign().rank();
      RefreshWorkerStatus(w);
      Send(w.status.worker_id(), std::move(m));
    }
    Log(LogLevel::kInfo, kLog, "job ", job->job_id(), " ", reason);
    Announce(plan, absl::StrCat(job->stage(), ": SCHEDULED (", reason, ")"));
    --pending_jobs_;
  }
}

}  // namespace loom::coordinator
