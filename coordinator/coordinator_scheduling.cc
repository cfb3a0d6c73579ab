// Scheduling half of Coordinator: dependencies between stages, inputs and assignments, and the
// pass that places waiting jobs (scheduler.h does the placement itself).
#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_ref.h"
#include "common/logging.h"
#include "common/plan_resolve.h"
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

std::vector<Coordinator::Dependency> Coordinator::Dependencies(const PlanRecord& plan, int index) const {
  const loom::v1::Stage stage = ResolveStage(plan.plan(), index);
  std::vector<std::pair<std::string, std::string>> refs;  // (input name, reference)
  auto add = [&](const std::string& name, const std::string& ref) {
    if (!ref.empty()) refs.emplace_back(name, ref);
  };
  add("from", stage.from());
  using K = loom::v1::StageKind;
  switch (stage.kind()) {
    case K::STAGE_KIND_DISTILL:
      add("teacher", stage.distill().teacher());
      break;
    case K::STAGE_KIND_DPO:
      add("reference", stage.dpo().reference());
      add("reward_model", stage.dpo().scorer().reward_model());
      break;
    case K::STAGE_KIND_RL:
      add("reference", stage.rl().reference());
      add("reward_model", stage.rl().scorer().reward_model());
      break;
    case K::STAGE_KIND_REJECTION_SAMPLING:
      add("reward_model", stage.rejection_sampling().scorer().reward_model());
      break;
    case K::STAGE_KIND_AVERAGE:
      for (int i = 0; i < stage.average().checkpoints_size(); ++i) {
        add(absl::StrCat("checkpoints[", i, "]"), stage.average().checkpoints(i));
      }
      break;
    case K::STAGE_KIND_MERGE:
      for (int i = 0; i < stage.merge().inputs_size(); ++i)
        add(absl::StrCat("inputs[", i, "]"), stage.merge().inputs(i));
      add("base", stage.merge().base());
      break;
    default:
      break;
  }
  std::vector<Dependency> deps;
  if (!stage.dataset().from_stage().empty()) {
    for (int j = 0; j < plan.plan().stages_size(); ++j) {
      if (plan.plan().stages(j).name() == stage.dataset().from_stage())
        deps.push_back({"dataset", j, -1, ""});
    }
  }
  for (const auto& [name, text] : refs) {
    absl::StatusOr<CheckpointRef> ref = ParseCheckpointRef(text);
    if (!ref.ok()) continue;  // validation already refused it
    Dependency d;
    d.input = name;
    if (ref->kind == CheckpointRef::Kind::kPath) {
      d.path = ref->path;
    } else {
      for (int j = 0; j < plan.plan().stages_size(); ++j) {
        if (plan.plan().stages(j).name() == ref->stage) d.stage = j;
      }
      d.step = ref->step;
      if (d.stage < 0) continue;
    }
    deps.push_back(d);
  }
  return deps;
}

absl::StatusOr<std::map<std::string, std::string>> Coordinator::ResolveInputs(const PlanRecord& plan,
                                                                              int index) {
  std::map<std::string, std::string> inputs;
  for (const Dependency& d : Dependencies(plan, index)) {
    if (d.stage < 0) {
      inputs[d.input] = d.path;
      continue;
    }
    const JobStatus& dep = plan.status().jobs(d.stage);
    if (d.step < 0) {
      inputs[d.input] = dep.final_checkpoint().path();
      continue;
    }
    std::string path;
    for (const auto& c : checkpoints_[plan.status().plan_id()]) {
      if (c.stage() == dep.stage() && c.step() == d.step) path = c.path();
    }
    if (path.empty()) {
      return absl::NotFoundError(
          absl::StrCat(d.input, ": stage '", dep.stage(), "' committed no checkpoint at step ", d.step));
    }
    inputs[d.input] = path;
  }
  // average {last_k: K}: the last K committed checkpoints of the `from` stage, oldest first, as
  // "last_k[0]" .. "last_k[K-1]".
  const loom::v1::Stage& stage = plan.plan().stages(index);
  if (stage.kind() == loom::v1::STAGE_KIND_AVERAGE && stage.average().has_last_k()) {
    const std::string from = plan.plan().stages(index).from();
    std::vector<const loom::v1::CheckpointInfo*> found;
    for (const auto& c : checkpoints_[plan.status().plan_id()]) {
      if (c.stage() == from) found.push_back(&c);
    }
    std::sort(found.begin(), found.end(), [](auto* a, auto* b) { return a->step() < b->step(); });
    const int k = stage.average().last_k();
    if (static_cast<int>(found.size()) < k) {
      return absl::NotFoundError(absl::StrCat("average.last_k: stage '", from, "' committed ", found.size(),
                                              " checkpoints, fewer than ", k));
    }
    for (int i = 0; i < k; ++i) inputs[absl::StrCat("last_k[", i, "]")] = found[found.size() - k + i]->path();
  }
  return inputs;
}

loom::v1::Assignment Coordinator::MakeAssignment(const PlanRecord& plan, int index, int rank, int device,
                                                 const std::map<std::string, std::string>& inputs) const {
  const JobStatus& job = plan.status().jobs(index);
  loom::v1::Assignment a;
  a.mutable_rank()->set_job_id(job.job_id());
  a.mutable_rank()->set_attempt(job.attempt());
  a.mutable_rank()->set_rank(rank);
  a.set_plan_id(plan.status().plan_id());
  *a.mutable_stage() = ResolveStage(plan.plan(), index);
  *a.mutable_model() = ResolveModel(plan.plan(), a.stage().model());
  if (a.stage().kind() == loom::v1::STAGE_KIND_DISTILL) {
    absl::StatusOr<CheckpointRef> ref = ParseCheckpointRef(a.stage().distill().teacher());
    if (ref.ok() && ref->kind == CheckpointRef::Kind::kStage) {
      for (int j = 0; j < plan.plan().stages_size(); ++j) {
        if (plan.plan().stages(j).name() == ref->stage) {
          *a.mutable_teacher_model() = ResolveModel(plan.plan(), ResolveStage(plan.plan(), j).model());
        }
      }
    }
  }
  *a.mutable_data() = plan.plan().data();
  if (a.data().dir().empty()) a.mutable_data()->set_dir(options_.prepared_data);
  a.set_seed(a.stage().has_seed() ? a.stage().seed() : StageSeed(PlanSeed(plan.plan()), a.stage().name()));
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
  a.set_resume_from(job.last_checkpoint().path());
  a.set_checkpoint_dir(
      absl::StrCat(options_.checkpoint_root, "/", plan.status().plan_id(), "/", job.stage()));
  for (const auto& [k, v] : inputs) (*a.mutable_inputs())[k] = v;
  a.set_device_index(device);
  return a;
}

void Coordinator::ScheduleLocked() {
  dirty_schedule_ = false;
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
      std::vector<std::string> waiting;
      for (const Dependency& d : Dependencies(*plan, i)) {
        if (d.stage >= 0 && plan->status().jobs(d.stage).state() != loom::v1::JOB_STATE_SUCCEEDED) {
          waiting.push_back(plan->status().jobs(d.stage).stage());
        }
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
      candidates.push_back({plan, i});
    }
  }
  pending_jobs_ = pending;
  if (candidates.empty()) return;

  std::vector<FreeWorker> free;
  for (auto& [id, w] : workers_) {
    if (w.link == nullptr) continue;
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
    const loom::v1::Stage stage = ResolveStage(c.plan->plan(), c.index);
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
  const int64_t now = clock_();
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
    absl::StatusOr<std::map<std::string, std::string>> inputs = ResolveInputs(plan, i);
    if (!inputs.ok()) {
      plan.mutable_runtime(i)->set_last_error(std::string(inputs.status().message()));
      SetJobState(plan, i, loom::v1::JOB_STATE_FAILED, std::string(inputs.status().message()));
      SettlePlan(plan);
      Persist(plan);
      Announce(plan, absl::StrCat(job->stage(), ": failed: ", inputs.status().message()));
      continue;
    }
    job->set_attempt(job->attempt() + 1);
    job->clear_inputs();
    for (const auto& [key, value] : *inputs) (*job->mutable_inputs())[key] = value;
    job->set_resumed_from(job->last_checkpoint().path());
    job->clear_rank_workers();
    job->clear_progress();
    loom::v1::JobRuntime* runtime = plan.mutable_runtime(i);
    runtime->clear_ranks();
    runtime->set_attempt_started_ms(now);
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
    const int full_dp = std::max(1, ResolveStage(plan.plan(), i).parallel().dp());
    const std::string reason = absl::StrCat(
        "attempt ", job->attempt(), ": ", d.ranks.size(), " ranks on ", absl::StrJoin(used, ", "),
        d.dp < full_dp ? absl::StrCat(" (elastic: dp ", d.dp, " of ", full_dp, ", the same global batch)") : "",
        job->resumed_from().empty() ? "" : absl::StrCat(", resuming from ", job->resumed_from()));
    SetJobState(plan, i, loom::v1::JOB_STATE_SCHEDULED, reason);
    Persist(plan);
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
