#include "coordinator/coordinator.h"

#include <algorithm>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_ref.h"
#include "common/confined_read.h"
#include "common/logging.h"
#include "common/plan_error.h"
#include "common/plan_repeat.h"
#include "common/plan_resolve.h"
#include "common/plan_validation.h"
#include "common/proto_names.h"
#include "common/rank_exit.h"
#include "common/stage_inputs.h"
#include "coordinator/checkpoint_files.h"
#include "coordinator/job_state.h"
#include "coordinator/plan_files.h"
#include "coordinator/scheduler.h"
#include "coordinator/storage_proof.h"

namespace loom::coordinator {

using loom::v1::JobState;
using loom::v1::JobStatus;
using loom::v1::PlanRecord;

namespace {

constexpr char kLog[] = "coordinator";

std::string Upper(JobState s) {
  std::string name = EnumName(s);
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

std::string AttemptKey(const std::string& job_id, int attempt) { return absl::StrCat(job_id, "#", attempt); }

// "rank 1 on w2 exited with code 66: <the rank's last error line>".
std::string RankExitMessage(const loom::v1::RankExit& exit, const std::string& worker_id) {
  const std::string what = exit.exit_code() < 0 ? absl::StrCat("was killed by signal ", -exit.exit_code())
                                                : absl::StrCat("exited with code ", exit.exit_code());
  return absl::StrCat("rank ", exit.rank().rank(), " on ", worker_id, " ", what, exit.error().empty() ? "" : ": ",
                      exit.error());
}

// Fills record.resolved: every stage of the plan resolved once (its defaults, model, teacher's
// model and seed), for scheduling and assignments to read.
void ResolveStages(PlanRecord* record) {
  const loom::v1::TrainingPlan& plan = record->plan();
  record->clear_resolved();
  for (int i = 0; i < plan.stages_size(); ++i) {
    loom::v1::ResolvedStage* r = record->add_resolved();
    *r->mutable_stage() = ResolveStage(plan, i);
    *r->mutable_model() = ResolveModel(plan, r->stage().model());
    r->set_seed(r->stage().seed());
    if (r->stage().kind() == loom::v1::STAGE_KIND_DISTILL) {
      absl::StatusOr<CheckpointRef> teacher = ParseCheckpointRef(r->stage().distill().teacher());
      if (teacher.ok() && teacher->kind == CheckpointRef::Kind::kStage) {
        // Validation made the teacher an earlier stage, resolved above.
        if (const int j = FindStage(plan, teacher->stage); j >= 0 && j < i) {
          *r->mutable_teacher_model() = record->resolved(j).model();
        }
      }
    }
  }
}

// `roots` resolved (symlinks, `..`) as far as they exist, as plan_files.cc checks them.
std::vector<std::string> ResolvedRoots(const std::vector<std::string>& roots) {
  std::vector<std::string> out;
  for (const std::string& root : roots) out.push_back(ResolvedPath(root));
  return out;
}

}  // namespace

Coordinator::Coordinator(Store* store, CoordinatorOptions options, Clock clock)
    : store_(store),
      options_(std::move(options)),
      read_roots_(ResolvedRoots(options_.allowed_roots)),
      clock_(std::move(clock)),
      history_(store, options_.history_max_points) {}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(Store* store, CoordinatorOptions options,
                                                                 Clock clock) {
  std::unique_ptr<Coordinator> c(new Coordinator(store, std::move(options), std::move(clock)));
  absl::MutexLock lock(&c->mu_);
  if (absl::Status s = c->LoadLocked(); !s.ok()) return s;
  return c;
}

absl::Status Coordinator::LoadLocked() {
  absl::StatusOr<StoreContents> contents = store_->Load();
  if (!contents.ok()) return contents.status();
  const int64_t now = clock_();
  plan_seq_ = contents->plan_seq;
  for (loom::v1::CheckpointInfo& c : contents->checkpoints) {
    checkpoints_[c.plan_id()].push_back(std::move(c));
    ++checkpoints_committed_;
  }
  for (loom::v1::WorkerStatus& s : contents->workers) {
    Worker& w = workers_[s.worker_id()];
    w.status = std::move(s);
    RefreshWorkerStatus(w);
  }
  int adopting = 0;
  for (PlanRecord& record : contents->plans) {
    const std::string id = record.status().plan_id();
    PlanRecord& plan = plans_[id] = std::move(record);
    // Written before plans kept their resolved stages: resolve them once, now.
    if (plan.resolved_size() != plan.plan().stages_size()) ResolveStages(&plan);
    // Retention counts from the durable end time, so a restart neither resets nor skips it.
    if (plan.status().state() != loom::v1::PLAN_STATE_ACTIVE) ended_plans_.insert({plan.status().ended_ms(), id});
    for (int i = 0; i < plan.status().jobs_size(); ++i) {
      const JobStatus& job = plan.status().jobs(i);
      if (HasAttemptPlaced(job.state()) && plan.runtime(i).ranks_size() > 0) {
        GrantWriteLease(plan, i);
        adopt_deadline_[job.job_id()] = now + absl::ToInt64Milliseconds(options_.adopt_grace);
        adopted_[job.job_id()].clear();
        ++adopting;
      }
    }
  }
  Log(LogLevel::kInfo, kLog, "loaded ", plans_.size(), " plans, ", checkpoints_committed_, " checkpoints, ",
      workers_.size(), " workers; ", adopting, " running attempts wait ",
      absl::FormatDuration(options_.adopt_grace), " for their workers");
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Client API

absl::StatusOr<std::string> Coordinator::SubmitPlan(const loom::v1::TrainingPlan& submitted,
                                                    const std::string& source,
                                                    const loom::v1::Principal& submitted_by) {
  if (submitted.ByteSizeLong() > static_cast<size_t>(kMaxPlanBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("plan is ", submitted.ByteSizeLong(), " bytes; the limit is ", kMaxPlanBytes));
  }
  // Clients expand repeat blocks when they read the plan; a plan sent unexpanded is expanded here.
  loom::v1::TrainingPlan plan = submitted;
  std::vector<PlanError> errors = ExpandRepeats(&plan);
  if (errors.empty()) errors = ValidatePlan(plan);
  if (!errors.empty()) return PlanErrorsToStatus(errors, source.empty() ? "the plan" : source);

  PlanRecord record;
  *record.mutable_plan() = plan;
  record.set_source(source);
  ResolveStages(&record);
  // What the plan reads must be there now: a missing file fails every attempt alike.
  errors = CheckPlanFiles(record, options_.prepared_data, options_.allowed_roots);
  if (!errors.empty()) return PlanErrorsToStatus(errors, source.empty() ? "the plan" : source);

  absl::MutexLock lock(&mu_);
  const int64_t now = clock_();
  const int64_t seq = plan_seq_ + 1;
  const std::string plan_id = absl::StrCat(plan.name(), "-", seq);
  record.set_seq(static_cast<uint64_t>(seq));
  loom::v1::PlanStatus* status = record.mutable_status();
  status->set_plan_id(plan_id);
  status->set_name(plan.name());
  status->set_state(loom::v1::PLAN_STATE_ACTIVE);
  status->set_submitted_ms(now);
  status->set_priority(plan.priority());
  if (!submitted_by.name().empty()) *status->mutable_submitted_by() = submitted_by;
  for (const loom::v1::ResolvedStage& resolved : record.resolved()) {
    const loom::v1::Stage& stage = resolved.stage();
    JobStatus* job = status->add_jobs();
    job->set_job_id(absl::StrCat(plan_id, "/", stage.name()));
    job->set_stage(stage.name());
    job->set_kind(stage.kind());
    job->set_round(stage.round());
    job->set_state(loom::v1::JOB_STATE_PENDING);
    job->set_reason("submitted");
    job->set_tokens_budget(stage.tokens());
    loom::v1::JobTransition* t = job->add_transitions();
    t->set_time_ms(now);
    t->set_to_state(loom::v1::JOB_STATE_PENDING);
    t->set_reason("submitted");
    record.add_runtime();
  }
  StoreWrite write;
  write.plans.push_back(&record);
  write.plan_seq = seq;
  if (absl::Status s = store_->Write(write); !s.ok()) return s;
  plan_seq_ = seq;
  PlanRecord& stored = plans_[plan_id] = std::move(record);
  Log(LogLevel::kInfo, kLog, "plan ", plan_id, " submitted (", stored.resolved_size(), " stages, priority ",
      plan.priority(), source.empty() ? "" : ", from ", source,
      submitted_by.name().empty() ? "" : absl::StrCat(", by ", submitted_by.name(), " (", submitted_by.role(), ")"),
      ")");
  Announce(stored, absl::StrCat("submitted with ", stored.resolved_size(), " stages"));
  dirty_schedule_ = true;
  return plan_id;
}

absl::StatusOr<loom::v1::GetPlanResponse> Coordinator::GetPlan(const std::string& plan_id) {
  absl::MutexLock lock(&mu_);
  auto it = plans_.find(plan_id);
  if (it == plans_.end()) return NoPlan(plan_id);
  loom::v1::GetPlanResponse response;
  *response.mutable_status() = it->second.status();
  LiveGoodput(response.mutable_status());
  *response.mutable_plan() = it->second.plan();
  return response;
}

loom::v1::ListPlansResponse Coordinator::ListPlans(bool include_finished) {
  absl::MutexLock lock(&mu_);
  std::vector<const PlanRecord*> plans;
  for (const auto& [id, plan] : plans_) {
    if (include_finished || plan.status().state() == loom::v1::PLAN_STATE_ACTIVE) plans.push_back(&plan);
  }
  std::sort(plans.begin(), plans.end(),
            [](const PlanRecord* a, const PlanRecord* b) { return a->seq() < b->seq(); });
  loom::v1::ListPlansResponse response;
  for (const PlanRecord* p : plans) LiveGoodput(&(*response.add_plans() = p->status()));
  return response;
}

absl::Status Coordinator::CancelPlan(const std::string& plan_id, const std::string& reason) {
  {
    absl::MutexLock lock(&mu_);
    auto it = plans_.find(plan_id);
    if (it == plans_.end()) return NoPlan(plan_id);
    PlanRecord& plan = it->second;
    const std::string why = reason.empty() ? "cancelled by the user" : absl::StrCat("cancelled: ", reason);
    for (int i = 0; i < plan.status().jobs_size(); ++i) {
      if (IsTerminal(plan.status().jobs(i).state())) continue;
      AbortRanks(plan, i, why);
      SetJobState(plan, i, loom::v1::JOB_STATE_CANCELLED, why);
    }
    SettlePlan(plan);
    Persist(plan);
    Announce(plan, why);
    dirty_schedule_ = true;
  }
  Flush();
  return absl::OkStatus();
}

absl::StatusOr<loom::v1::WorkerStatus> Coordinator::DrainWorker(const std::string& worker_id, bool undrain) {
  loom::v1::WorkerStatus status;
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end()) {
      return absl::NotFoundError(absl::StrCat("no worker '", worker_id, "' (see `loom workers`)"));
    }
    Worker& w = it->second;
    if (w.status.draining() != !undrain) {
      w.status.set_draining(!undrain);
      PersistWorker(w);
      Log(LogLevel::kInfo, kLog, "worker ", worker_id,
          undrain ? " undrained"
                  : (w.occupied.empty() ? " draining: no new ranks"
                                        : " draining: no new ranks; its ranks checkpoint at their next step and stop"));
      dirty_schedule_ = true;
      // Its ranks save a checkpoint with their peers at the next step boundary and stop; their
      // jobs then move (OnRankExit, exit 76), losing no step.
      if (!undrain && !w.occupied.empty()) {
        loom::v1::CoordinatorMessage preempt;
        preempt.mutable_preempt()->set_reason("the worker is drained");
        Send(worker_id, std::move(preempt));
      }
    }
    RefreshWorkerStatus(w);
    status = w.status;
  }
  Flush();
  return status;
}

loom::v1::ListWorkersResponse Coordinator::ListWorkers() {
  absl::MutexLock lock(&mu_);
  loom::v1::ListWorkersResponse response;
  for (auto& [id, w] : workers_) {
    RefreshWorkerStatus(w);
    *response.add_workers() = w.status;
  }
  return response;
}

absl::StatusOr<loom::v1::ListCheckpointsResponse> Coordinator::ListCheckpoints(const std::string& plan_id,
                                                                               const std::string& stage) {
  absl::MutexLock lock(&mu_);
  if (!plans_.contains(plan_id)) return NoPlan(plan_id);
  loom::v1::ListCheckpointsResponse response;
  auto it = checkpoints_.find(plan_id);
  if (it == checkpoints_.end()) return response;
  for (const loom::v1::CheckpointInfo& c : it->second) {
    if (stage.empty() || c.stage() == stage) *response.add_checkpoints() = c;
  }
  return response;
}

absl::StatusOr<loom::v1::PlanEvent> Coordinator::WaitForChange(const std::string& plan_id, uint64_t* version,
                                                               absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  if (!plans_.contains(plan_id)) return NoPlan(plan_id);
  plan_version_.try_emplace(plan_id, 0);  // a plan loaded at start has had no event yet
  const uint64_t seen = *version;
  // The plan may expire while this waits (the lock is released meanwhile): then it is looked up
  // again, and gone.
  auto changed = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto v = plan_version_.find(plan_id);
    return v == plan_version_.end() || v->second != seen;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  auto it = plans_.find(plan_id);
  if (it == plans_.end()) return NoPlan(plan_id);
  *version = plan_version_[plan_id];
  loom::v1::PlanEvent event;
  event.set_time_ms(clock_());
  *event.mutable_status() = it->second.status();
  LiveGoodput(event.mutable_status());
  event.set_message(last_event_[plan_id]);
  return event;
}

// ---------------------------------------------------------------------------------------------
// Worker API

loom::v1::StorageInfo Coordinator::Storage() const {
  loom::v1::StorageInfo info;
  info.set_checkpoint_root(options_.checkpoint_root);
  info.set_token_path(StorageTokenPath(options_.checkpoint_root));
  return info;
}

absl::StatusOr<int64_t> Coordinator::RegisterWorker(const loom::v1::RegisterWorker& request,
                                                    std::shared_ptr<WorkerLink> link) {
  if (request.worker_id().empty()) return absl::InvalidArgumentError("RegisterWorker.worker_id is empty");
  if (request.devices_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("worker ", request.worker_id(), " registered no devices"));
  }
  // The token as read from the file, with or without its newline.
  if (!options_.storage_token.empty() &&
      absl::StripAsciiWhitespace(request.storage_token()) != options_.storage_token) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", request.worker_id(), " (", request.host(), ") does not see the coordinator's checkpoint root ",
        options_.checkpoint_root, ": ",
        request.storage_token().empty() ? "it could not read " : "it read another token from ",
        StorageTokenPath(options_.checkpoint_root),
        ". Every worker host must mount the checkpoint root at the same path (docs/operations.md)"));
  }
  int64_t connection = 0;
  {
    absl::MutexLock lock(&mu_);
    const int64_t now = clock_();
    Worker& w = workers_[request.worker_id()];
    const bool reconnect = w.connection != 0;
    connection = next_connection_++;
    by_connection_.erase(w.connection);
    by_connection_[connection] = request.worker_id();
    const HeartbeatKey heartbeat_key = NewHeartbeatKey();
    w.heartbeat_mac = std::make_shared<HeartbeatMac>(heartbeat_key);
    w.last_datagram_sequence = 0;
    w.link = std::move(link);
    w.connection = connection;
    w.stopping = false;  // a new process, or one that stopped stopping
    w.occupied.clear();
    w.status.set_worker_id(request.worker_id());
    w.status.set_host(request.host());
    *w.status.mutable_devices() = request.devices();
    w.status.set_slots(request.devices_size());
    w.status.set_metrics_address(request.metrics_address());
    w.status.set_address(request.address());
    w.status.clear_lost_reason();
    w.status.set_last_heartbeat_ms(now);

    loom::v1::CoordinatorMessage ack;
    ack.mutable_registered()->set_worker_id(request.worker_id());
    ack.mutable_registered()->set_heartbeat_interval_ms(
        absl::ToInt64Milliseconds(options_.heartbeat_interval));
    if (heartbeat_udp_port_ > 0) {
      ack.mutable_registered()->set_heartbeat_udp_port(heartbeat_udp_port_);
      ack.mutable_registered()->set_connection(connection);
      ack.mutable_registered()->set_heartbeat_key(heartbeat_key.data(), heartbeat_key.size());
      ack.mutable_registered()->set_full_heartbeat_interval_ms(
          absl::ToInt64Milliseconds(options_.full_heartbeat_interval));
    }
    Send(request.worker_id(), std::move(ack));

    // Ranks the worker still runs: re-adopt the current ones, abort the rest.
    std::map<std::string, std::set<int>> listed;
    for (const loom::v1::RankRef& r : request.running())
      listed[AttemptKey(r.job_id(), r.attempt())].insert(r.rank());
    int adopted = 0, aborted = 0;
    for (const loom::v1::RankRef& r : request.running()) {
      int index = -1;
      PlanRecord* plan = FindJob(r.job_id(), &index);
      const loom::v1::RankPlacement* placement = nullptr;
      if (plan != nullptr && IsCurrent(r)) {
        for (const auto& p : plan->runtime(index).ranks()) {
          if (p.rank() == r.rank() && p.worker_id() == request.worker_id()) placement = &p;
        }
      }
      if (placement != nullptr) {
        w.occupied[placement->device_index()] = r;
        adopted_[r.job_id()].insert(r.rank());
        ++adopted;
      } else {
        loom::v1::CoordinatorMessage abort;
        *abort.mutable_abort()->mutable_rank() = r;
        abort.mutable_abort()->set_reason("the coordinator does not know this attempt any more");
        Send(request.worker_id(), std::move(abort));
        ++aborted;
      }
    }
    // Current ranks placed on this worker that it did not list: they may have exited while it was
    // away (their RankExit follows) or died with a restarted daemon. Give them a moment.
    for (auto& [id, plan] : plans_) {
      for (int i = 0; i < plan.status().jobs_size(); ++i) {
        const JobStatus& job = plan.status().jobs(i);
        if (!HasAttemptPlaced(job.state())) continue;
        const std::set<int>& here = listed[AttemptKey(job.job_id(), job.attempt())];
        for (const auto& p : plan.runtime(i).ranks()) {
          if (p.worker_id() != request.worker_id() || p.exited_ok() || here.contains(p.rank())) continue;
          adopted_[job.job_id()].erase(p.rank());
          const int64_t deadline = now + absl::ToInt64Milliseconds(options_.heartbeat_timeout);
          auto [it, inserted] = adopt_deadline_.emplace(job.job_id(), deadline);
          if (!inserted) it->second = std::min(it->second, deadline);
        }
      }
    }
    RefreshWorkerStatus(w);
    PersistWorker(w);
    Log(LogLevel::kInfo, kLog, "worker ", request.worker_id(), reconnect ? " reconnected" : " registered",
        " (", request.host(), ", ", request.devices_size(), " slots, ", adopted, " ranks re-adopted, ",
        aborted, " aborted)");
    dirty_schedule_ = true;
  }
  Flush();
  return connection;
}

void Coordinator::HandleWorkerMessage(const std::string& worker_id, int64_t connection,
                                      const loom::v1::WorkerMessage& message) {
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end() || it->second.connection != connection) return;  // a stale stream
    Worker& w = it->second;
    switch (message.body_case()) {
      case loom::v1::WorkerMessage::kHeartbeat:
        OnHeartbeat(w, message.heartbeat());
        break;
      case loom::v1::WorkerMessage::kProgress:
        w.status.set_last_heartbeat_ms(clock_());
        earliest_heartbeat_ms_ = std::min(earliest_heartbeat_ms_, w.status.last_heartbeat_ms());
        if (FenceReport(worker_id, message.progress().rank(), "progress", nullptr).empty())
          OnProgress(message.progress());
        break;
      case loom::v1::WorkerMessage::kCheckpoint:
        if (FenceReport(worker_id, message.checkpoint().rank(), "checkpoint report", &message.checkpoint().path())
                .empty()) {
          OnCheckpoint(message.checkpoint());
        }
        break;
      case loom::v1::WorkerMessage::kRankExit:
        if (FenceReport(worker_id, message.rank_exit().rank(), "rank exit", nullptr).empty()) {
          OnRankExit(w, message.rank_exit());
        } else {
          // The worker is the authority on its own slots: a rank of an ended attempt that exits
          // frees the slot it held there (and nothing else).
          ReleaseSlot(w, message.rank_exit().rank());
        }
        break;
      case loom::v1::WorkerMessage::kLogChunk:  // `loom logs` (coordinator_logs.cc)
        log_relay_.Deliver(worker_id, message.log_chunk());
        break;
      case loom::v1::WorkerMessage::kDraining:
        // Stopping with time to save: no new ranks here while its ranks checkpoint and stop. Not
        // an operator's drain: the worker comes back (a restart, the next Slurm allocation under
        // the same node name) ready for work, so this lasts as long as this connection.
        if (!w.stopping) {
          w.stopping = true;
          dirty_schedule_ = true;
          Log(LogLevel::kInfo, kLog, "worker ", worker_id, " stopping (", message.draining().reason(),
              "): its ranks checkpoint at their next step and stop");
        }
        break;
      case loom::v1::WorkerMessage::kLeave:
        // Its jobs move now rather than after the heartbeat timeout; rank exits that follow on
        // this stream still count (HandleWorkerMessage ignores only other connections).
        WorkerLost(w, absl::StrCat("left: ", message.leave().reason()), /*end_stream=*/false);
        w.connection = connection;
        break;
      default:
        Log(LogLevel::kWarning, kLog, "worker ", worker_id, " sent an unexpected message (",
            message.body_case(), ")");
    }
    // A heartbeat usually queues nothing: then there is nothing to flush (two locks saved on the
    // coordinator's most frequent event).
    if (outbox_.empty() && deletions_.empty()) return;
  }
  Flush();
}

void Coordinator::Disconnected(const std::string& worker_id, int64_t connection, const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    auto it = workers_.find(worker_id);
    if (it == workers_.end() || it->second.connection != connection) return;
    if (it->second.link == nullptr) {  // it said it was leaving: already lost
      it->second.connection = 0;
      return;
    }
    WorkerLost(it->second, absl::StrCat("stream closed: ", why));
  }
  Flush();
}

void Coordinator::EnableHeartbeatDatagrams(int port) {
  absl::MutexLock lock(&mu_);
  heartbeat_udp_port_ = port;
}

Coordinator::DatagramVerdict Coordinator::OnHeartbeatDatagram(const HeartbeatDatagram& beat) {
  absl::MutexLock lock(&mu_);
  Worker* w = LiveConnection(beat.connection);
  if (w == nullptr) {
    ++datagrams_unknown_connection_;
    return DatagramVerdict::kUnknownConnection;
  }
  // A copy or an older one is dropped without computing its MAC.
  if (beat.sequence <= w->last_datagram_sequence) {
    ++datagrams_replayed_;
    return DatagramVerdict::kReplayed;
  }
  // Under mu_: with the connection's keyed context a MAC costs about what the lookup above does,
  // and one lookup per datagram is half the cost of looking up again after it.
  if (w->heartbeat_mac == nullptr || !w->heartbeat_mac->Verify(beat)) {
    ++datagrams_bad_mac_;
    return DatagramVerdict::kBadMac;
  }
  w->last_datagram_sequence = beat.sequence;
  w->status.set_last_heartbeat_ms(clock_());
  earliest_heartbeat_ms_ = std::min(earliest_heartbeat_ms_, w->status.last_heartbeat_ms());
  return DatagramVerdict::kAccepted;
}

Coordinator::Worker* Coordinator::LiveConnection(int64_t connection) {
  auto id = by_connection_.find(connection);
  if (id == by_connection_.end()) return nullptr;
  auto it = workers_.find(id->second);
  if (it == workers_.end() || it->second.connection != connection || it->second.link == nullptr) return nullptr;
  return &it->second;
}

void Coordinator::OnHeartbeat(Worker& w, const loom::v1::Heartbeat& hb) {
  w.status.set_last_heartbeat_ms(clock_());
  // Lower only when the clock went back; Tick's scan relies on it.
  earliest_heartbeat_ms_ = std::min(earliest_heartbeat_ms_, w.status.last_heartbeat_ms());
  for (const loom::v1::RankRef& r : hb.running()) {
    bool current = false;
    int index = -1;
    if (PlanRecord* plan = FindJob(r.job_id(), &index); plan != nullptr && IsCurrent(r)) {
      for (const auto& p : plan->runtime(index).ranks())
        current |= p.rank() == r.rank() && p.worker_id() == w.status.worker_id();
    }
    if (!current) {
      loom::v1::CoordinatorMessage abort;
      *abort.mutable_abort()->mutable_rank() = r;
      abort.mutable_abort()->set_reason("not part of a current attempt");
      Send(w.status.worker_id(), std::move(abort));
    }
  }
}

void Coordinator::OnProgress(const loom::v1::Progress& p) {
  if (!IsCurrent(p.rank())) return;
  int index = -1;
  PlanRecord* plan = FindJob(p.rank().job_id(), &index);
  JobStatus* job = plan->mutable_status()->mutable_jobs(index);
  if (p.step_compute_seconds() > 0) WatchStragglers(*plan, index, p);
  if (p.rank().rank() == 0) {
    StepClock& clock = step_clocks_[job->job_id()];
    if (clock.last_step_ms == 0) clock.last_step_ms = clock_();  // adopted after a restart
    if (p.step() > clock.last_step) {
      const int64_t now = clock_();
      if (clock.last_step >= 0) {
        std::vector<double>& recent = clock.recent_step_seconds;
        recent.push_back((now - clock.last_step_ms) / 1000.0 / static_cast<double>(p.step() - clock.last_step));
        constexpr size_t kRecentSteps = 64;
        if (recent.size() > kRecentSteps) recent.erase(recent.begin());
      }
      clock.last_step = p.step();
      clock.last_step_ms = now;
    }
    *job->mutable_progress() = p;
    if (p.has_rank_time()) {
      if (GoodputLedger* ledger = Ledger(*plan, index)) ledger->Progress(clock_(), p.step(), p.rank_time());
    }
    if (absl::Status s = history_.Record(plan->status().plan_id(), job->stage(), p); !s.ok())
      Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": run history not recorded: ", s.message());
    for (const auto& [k, v] : p.eval_loss()) (*job->mutable_eval_loss())[k] = v;
    for (const auto& [k, v] : p.eval_metrics()) (*job->mutable_eval_metrics())[k] = v;
    // No commit for kOverdueIntervals checkpoint intervals: training goes on, but a crash now
    // would cost all of it.
    const int every = plan->resolved(index).stage().checkpoint().every_steps();
    const int64_t since = p.step() - job->last_checkpoint().step();
    if (every > 0 && since >= int64_t{kOverdueIntervals} * every) {
      const std::string warning = absl::StrCat(
          "no checkpoint committed for ", since, " steps (", kOverdueIntervals, " intervals of checkpoint.every_steps ",
          every, ")",
          job->last_checkpoint_save_error().empty() ? ""
                                                    : absl::StrCat("; last failed save: ", job->last_checkpoint_save_error()));
      if (job->warning() != warning) {
        if (job->warning().empty()) Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": ", warning);
        job->set_warning(warning);
      }
    }
  }
  std::set<int>& seen = progressed_[job->job_id()];
  seen.insert(p.rank().rank());
  if (job->state() == loom::v1::JOB_STATE_SCHEDULED &&
      static_cast<int>(seen.size()) == plan->runtime(index).ranks_size()) {
    SetJobState(*plan, index, loom::v1::JOB_STATE_RUNNING,
                absl::StrCat("all ", seen.size(), " ranks training"));
    Persist(*plan);
  }
  Announce(*plan, "");
}

void Coordinator::OnCheckpoint(const loom::v1::CheckpointReport& report) {
  if (!IsCurrent(report.rank())) return;
  int index = -1;
  PlanRecord* plan = FindJob(report.rank().job_id(), &index);
  JobStatus* job = plan->mutable_status()->mutable_jobs(index);
  const std::string key = absl::StrCat(AttemptKey(job->job_id(), job->attempt()), "@", report.step());
  if (!report.error().empty()) {
    // A rank could not save its part: this checkpoint is never committed; training goes on.
    pending_checkpoints_.erase(key);
    job->set_checkpoint_save_failures(job->checkpoint_save_failures() + 1);
    job->set_last_checkpoint_save_error(absl::StrCat("step ", report.step(), ": ", report.error()));
    ++checkpoint_save_failures_;
    Persist(*plan);
    Log(LogLevel::kWarning, kLog, "job ", job->job_id(), " attempt ", job->attempt(), ": checkpoint step ",
        report.step(), " was not saved by rank ", report.rank().rank(), ": ", report.error(),
        "; training goes on and the next interval tries again");
    Announce(*plan, absl::StrCat(job->stage(), ": checkpoint step ", report.step(), " not saved (", report.error(),
                                 ")"));
    return;
  }
  PendingCheckpoint& pending = pending_checkpoints_[key];
  if (pending.shards.empty()) pending.report = report;
  if (pending.shards.insert(report.shard()).second) pending.bytes += report.bytes();
  if (static_cast<int>(pending.shards.size()) < std::max(1, report.num_shards())) return;
  const int64_t bytes = pending.bytes;
  pending_checkpoints_.erase(key);

  // Fencing: an attempt commits only what it wrote under its own directory.
  const std::string own = AttemptDir(plan->status().plan_id(), job->stage(), job->attempt());
  if (!IsInside(report.path(), own)) {
    Log(LogLevel::kError, kLog, "job ", job->job_id(), " attempt ", job->attempt(), ": checkpoint step ",
        report.step(), " refused: its path ", report.path(), " is not under the attempt's directory ", own);
    return;
  }
  std::vector<loom::v1::CheckpointInfo>& committed = checkpoints_[plan->status().plan_id()];
  loom::v1::CheckpointInfo info;
  info.set_plan_id(plan->status().plan_id());
  info.set_stage(job->stage());
  info.set_step(report.step());
  info.set_tokens(report.tokens());
  info.set_path(report.path());
  info.set_attempt(job->attempt());
  info.set_committed_ms(clock_());
  info.set_final(report.final());
  info.set_bytes(bytes);
  *job->mutable_last_checkpoint() = info;
  if (report.final()) *job->mutable_final_checkpoint() = info;
  // A later attempt that resumed from an earlier step commits the same step again: the new one
  // replaces the old (its record, under the same key; its directory, deleted).
  for (auto it = committed.begin(); it != committed.end(); ++it) {
    if (it->stage() == info.stage() && it->step() == info.step()) {
      if (it->path() != info.path()) deletions_.push_back({it->path()});
      committed.erase(it);
      break;
    }
  }
  committed.push_back(info);
  ++checkpoints_committed_;
  job->clear_warning();
  if (GoodputLedger* ledger = Ledger(*plan, index)) ledger->Committed(info.step());
  // Earlier saves of the attempt that never completed (a rank's part failed) are abandoned.
  const std::string attempt_prefix = absl::StrCat(AttemptKey(job->job_id(), job->attempt()), "@");
  for (auto it = pending_checkpoints_.begin(); it != pending_checkpoints_.end();) {
    it = absl::StartsWith(it->first, attempt_prefix) && it->second.report.step() < info.step()
             ? pending_checkpoints_.erase(it)
             : std::next(it);
  }
  Persist(*plan, &info);
  Log(LogLevel::kInfo, kLog, "job ", job->job_id(), " attempt ", job->attempt(), ": checkpoint step ",
      info.step(), " committed", info.final() ? " (final)" : "", " at ", info.path());
  Announce(*plan, absl::StrCat(job->stage(), ": checkpoint step ", info.step(), " committed",
                               info.final() ? " (final)" : ""));
  ApplyRetention(*plan, index);
  MaybeSucceed(*plan, index);
}

std::string Coordinator::FenceReport(const std::string& worker_id, const loom::v1::RankRef& rank, const char* what,
                                     const std::string* checkpoint_path) {
  std::string reason;
  int index = -1;
  const PlanRecord* plan = FindJob(rank.job_id(), &index);
  if (plan == nullptr) {
    reason = "unknown_job";
  } else {
    const JobStatus& job = plan->status().jobs(index);
    // The placement of the current attempt; rank_workers also covers an attempt that just failed
    // (RECOVERING: its ranks' exits still tell whose fault it was).
    // Placements are stored in rank order (coordinator_scheduling.cc), so a report costs one
    // lookup, not a scan of a large job's ranks; the scan stays for a record that is not.
    const auto& placed = plan->runtime(index).ranks();
    const std::string* placed_on = nullptr;
    if (rank.rank() >= 0 && rank.rank() < placed.size() && placed[rank.rank()].rank() == rank.rank()) {
      placed_on = &placed[rank.rank()].worker_id();
    } else {
      for (const auto& p : placed) {
        if (p.rank() == rank.rank()) placed_on = &p.worker_id();
      }
    }
    if (placed_on == nullptr && rank.rank() >= 0 && rank.rank() < job.rank_workers_size())
      placed_on = &job.rank_workers(rank.rank());
    if (job.attempt() != rank.attempt()) {
      reason = "stale_attempt";
    } else if (placed_on == nullptr) {
      reason = "unknown_rank";
    } else if (*placed_on != worker_id) {
      reason = "wrong_worker";
    } else if (checkpoint_path != nullptr && !checkpoint_path->empty() &&
               !IsInside(*checkpoint_path, AttemptDir(plan->status().plan_id(), job.stage(), job.attempt()))) {
      reason = "checkpoint_path";
    }
  }
  if (reason.empty()) return reason;
  ++fenced_reports_[reason];
  constexpr size_t kMaxLogged = 10000;
  if (fenced_logged_.size() >= kMaxLogged) fenced_logged_.clear();
  // The job id and the path are the sender's words: shown escaped and cut short.
  auto shown = [](const std::string& text) { return absl::CHexEscape(text.substr(0, 256)); };
  const std::string key = absl::StrCat(worker_id, "|", reason, "|", what, "|", rank.job_id().substr(0, 256), "#",
                                       rank.attempt(), "/", rank.rank());
  if (fenced_logged_.insert(key).second) {
    // A rank of an ended attempt reporting late is routine; anything else is a worker speaking
    // for ranks that are not its own.
    Log(reason == "stale_attempt" || reason == "unknown_job" ? LogLevel::kInfo : LogLevel::kWarning, kLog,
        "refused a ", what, " from worker ", worker_id, " for job ", shown(rank.job_id()), " attempt ",
        rank.attempt(), " rank ", rank.rank(), ": ", reason,
        reason == "checkpoint_path"
            ? absl::StrCat(" (", shown(*checkpoint_path), " is not under the attempt's directory)")
            : std::string(),
        " (said once per worker, rank, kind of report and reason; loom_fenced_reports_total counts them all)");
  }
  return reason;
}

void Coordinator::ReleaseSlot(Worker& w, const loom::v1::RankRef& rank) {
  for (auto it = w.occupied.begin(); it != w.occupied.end(); ++it) {
    if (it->second.job_id() == rank.job_id() && it->second.attempt() == rank.attempt() &&
        it->second.rank() == rank.rank()) {
      w.occupied.erase(it);
      dirty_schedule_ = true;
      break;
    }
  }
  RefreshWorkerStatus(w);
}

void Coordinator::OnRankExit(Worker& w, const loom::v1::RankExit& exit) {
  ReleaseSlot(w, exit.rank());
  if (!IsCurrent(exit.rank())) {
    MaybeFailForPlanFault(exit, w.status.worker_id());
    return;
  }
  int index = -1;
  PlanRecord* plan = FindJob(exit.rank().job_id(), &index);
  JobStatus* job = plan->mutable_status()->mutable_jobs(index);
  if (!HasAttemptPlaced(job->state())) return;
  adopted_[job->job_id()].insert(exit.rank().rank());
  if (exit.exit_code() == kRankExitPreempted) {
    // Drained: every rank saves a checkpoint at the same step, reports it, then exits 76. The
    // attempt moves once all have exited, so that the last rank's report, and the commit, come
    // first (each worker's messages arrive in order).
    bool all_exited = true;
    for (auto& p : *plan->mutable_runtime(index)->mutable_ranks()) {
      if (p.rank() == exit.rank().rank()) p.set_exited_ok(true);
      all_exited &= p.exited_ok();
    }
    Persist(*plan);
    if (!all_exited) return;
    if (WritesCheckpoint(*plan, index) && job->has_final_checkpoint()) {
      MaybeSucceed(*plan, index);
      return;
    }
    FailAttempt(*plan, index,
                ClusterFault("preempted", absl::StrCat(RankExitMessage(exit, w.status.worker_id()),
                                                       "; every rank stopped after the checkpoint at step ",
                                                       job->last_checkpoint().step())));
    return;
  }
  if (exit.exit_code() != 0) {
    loom::v1::JobRuntime* runtime = plan->mutable_runtime(index);
    Failure failure = ClassifyRankExit(exit.exit_code(), RankExitMessage(exit, w.status.worker_id()));
    // A crash that repeats the last failed attempt's error exactly is deterministic: the plan's.
    if (failure.cause == "crash" && !exit.error().empty() && runtime->last_rank_error() == exit.error() &&
        runtime->last_rank_exit_code() == exit.exit_code()) {
      failure.failure_class = loom::v1::FAILURE_CLASS_PLAN;
      failure.cause = "repeat";
    }
    runtime->set_last_rank_error(exit.error());
    runtime->set_last_rank_exit_code(exit.exit_code());
    FailAttempt(*plan, index, failure);
    return;
  }
  bool all_ok = true;
  for (auto& p : *plan->mutable_runtime(index)->mutable_ranks()) {
    if (p.rank() == exit.rank().rank()) p.set_exited_ok(true);
    all_ok &= p.exited_ok();
  }
  Persist(*plan);
  if (all_ok && WritesCheckpoint(*plan, index) && !job->has_final_checkpoint()) {
    FailAttempt(*plan, index, ClusterFault("crash", "every rank exited without a committed final checkpoint"));
    return;
  }
  MaybeSucceed(*plan, index);
}

void Coordinator::WorkerLost(Worker& w, const std::string& why, bool end_stream) {
  const std::string id = w.status.worker_id();
  if (end_stream && w.link != nullptr) outbox_.push_back({w.link, {}, /*end=*/true});
  by_connection_.erase(w.connection);
  w.link.reset();
  w.connection = 0;
  w.occupied.clear();
  w.status.set_lost_reason(why);
  RefreshWorkerStatus(w);
  PersistWorker(w);
  Log(LogLevel::kWarning, kLog, "worker ", id, " lost: ", why);
  for (auto& [plan_id, plan] : plans_) {
    for (int i = 0; i < plan.status().jobs_size(); ++i) {
      if (!HasAttemptPlaced(plan.status().jobs(i).state())) continue;
      bool affected = false;
      for (const auto& p : plan.runtime(i).ranks()) affected |= p.worker_id() == id && !p.exited_ok();
      if (affected) {
        Failure failure = ClusterFault(end_stream ? "worker_lost" : "worker_left",
                                       absl::StrCat("worker ", id, " lost (", why, ")"));
        if (end_stream) failure.failed_at_ms = w.status.last_heartbeat_ms();  // it went silent then
        FailAttempt(plan, i, failure);
      }
    }
  }
  dirty_schedule_ = true;
}

// ---------------------------------------------------------------------------------------------
// Timers and scheduling

void Coordinator::Tick() {
  {
    absl::MutexLock lock(&mu_);
    const int64_t now = clock_();
    const int64_t timeout = absl::ToInt64Milliseconds(options_.heartbeat_timeout);
    // The scan visits every worker: with 10,000 of them, ten scans a second cost more than
    // handling their heartbeats (3.5% of a core). It runs when a worker may have timed out (the
    // earliest last heartbeat is older than `timeout`: detection is as prompt as before), and at
    // least once a second and whenever the clock went back (a worker registered meanwhile may
    // predate the earliest).
    if (now - earliest_heartbeat_ms_ > timeout || now < last_heartbeat_scan_ms_ ||
        now - last_heartbeat_scan_ms_ >= 1000) {
      int64_t earliest = now;
      for (auto& [id, w] : workers_) {
        if (w.link == nullptr) continue;
        if (now - w.status.last_heartbeat_ms() > timeout) {
          WorkerLost(w,
                     absl::StrCat("no heartbeat for ", (now - w.status.last_heartbeat_ms()) / 1000.0, " s"));
        } else {
          earliest = std::min(earliest, w.status.last_heartbeat_ms());
        }
      }
      earliest_heartbeat_ms_ = earliest;
      last_heartbeat_scan_ms_ = now;
    }
    for (auto it = adopt_deadline_.begin(); it != adopt_deadline_.end();) {
      int index = -1;
      PlanRecord* plan = FindJob(it->first, &index);
      if (plan == nullptr || !HasAttemptPlaced(plan->status().jobs(index).state())) {
        it = adopt_deadline_.erase(it);
        continue;
      }
      std::vector<std::string> missing;
      for (const auto& p : plan->runtime(index).ranks()) {
        if (!p.exited_ok() && !adopted_[it->first].contains(p.rank()))
          missing.push_back(absl::StrCat(p.rank()));
      }
      if (missing.empty()) {
        it = adopt_deadline_.erase(it);
        continue;
      }
      if (now < it->second) {
        ++it;
        continue;
      }
      const std::string job_id = it->first;
      it = adopt_deadline_.erase(it);
      FailAttempt(*plan, index,
                  ClusterFault("rank_lost", absl::StrCat("rank(s) ", absl::StrJoin(missing, ","),
                                                         " not reported running by their workers")));
    }
    if (now - last_hang_scan_ms_ >= 1000 || now < last_hang_scan_ms_) {
      DetectHungJobs(now);
      last_hang_scan_ms_ = now;
    }
    if (next_retry_ms_ > 0 && now >= next_retry_ms_) dirty_schedule_ = true;
    if (dirty_schedule_) ScheduleLocked();
    ExpirePlans(now);
  }
  Flush();
}

// ---------------------------------------------------------------------------------------------
// Plan retention

void Coordinator::ExpirePlans(int64_t now) {
  if (options_.plan_retention <= absl::ZeroDuration() || ended_plans_.empty()) return;
  const int64_t retention_ms = absl::ToInt64Milliseconds(options_.plan_retention);
  for (int forgotten = 0; forgotten < kExpiriesPerTick && !ended_plans_.empty();) {
    const auto oldest = ended_plans_.begin();
    if (now - oldest->first < retention_ms) return;  // the rest ended later still
    const auto [ended_ms, plan_id] = *oldest;
    auto it = plans_.find(plan_id);
    // Entries of plans that are no longer ended, or ended again later, are stale.
    if (it == plans_.end() || it->second.status().state() == loom::v1::PLAN_STATE_ACTIVE ||
        it->second.status().ended_ms() != ended_ms) {
      ended_plans_.erase(oldest);
      continue;
    }
    if (!ForgetPlan(plan_id)) return;  // the store refused: tried again next tick
    ended_plans_.erase(ended_plans_.find({ended_ms, plan_id}));
    expired_[plan_id] = ended_ms;
    expired_order_.push_back(plan_id);
    if (expired_order_.size() > kExpiredRemembered) {
      expired_.erase(expired_order_.front());
      expired_order_.pop_front();
    }
    ++forgotten;
  }
}

bool Coordinator::ForgetPlan(const std::string& plan_id) {
  // History first: a crash before the records go leaves the plan to expire again at the next
  // start, never history that no plan owns.
  if (absl::Status s = history_.ForgetPlan(plan_id); !s.ok()) {
    Log(LogLevel::kError, kLog, "plan ", plan_id, ": retention could not forget its run history: ", s.message());
    return false;
  }
  StoreWrite write;
  write.deleted_plans.push_back(plan_id);
  if (absl::Status s = store_->Write(write); !s.ok()) {
    Log(LogLevel::kError, kLog, "plan ", plan_id, ": retention could not forget its records: ", s.message());
    return false;
  }
  const PlanRecord& plan = plans_.at(plan_id);
  Log(LogLevel::kInfo, kLog, "plan ", plan_id, " (", EnumName(plan.status().state()), ") expired after retention (",
      absl::FormatDuration(options_.plan_retention), " after it ended): records forgotten; its checkpoint files stay in ",
      absl::StrCat(options_.checkpoint_root, "/", plan_id));
  // Every job-keyed map: job ids are "<plan_id>/<stage>" (pending checkpoints "<job>#<attempt>@<step>").
  const std::string jobs = absl::StrCat(plan_id, "/");
  const auto erase_jobs = [&](auto& map) {
    for (auto it = map.lower_bound(jobs); it != map.end() && it->first.starts_with(jobs);) it = map.erase(it);
  };
  erase_jobs(goodput_);
  erase_jobs(step_clocks_);
  erase_jobs(stragglers_);
  erase_jobs(progressed_);
  erase_jobs(adopt_deadline_);
  erase_jobs(adopted_);
  erase_jobs(pending_checkpoints_);
  checkpoints_.erase(plan_id);
  last_event_.erase(plan_id);
  plans_.erase(plan_id);
  // Wakes `loom watch` on it (WaitForChange then answers NOT_FOUND).
  plan_version_.erase(plan_id);
  return true;
}

absl::Status Coordinator::NoPlan(const std::string& plan_id) {
  const std::string retention = absl::FormatDuration(options_.plan_retention);
  if (auto it = expired_.find(plan_id); it != expired_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "plan '", plan_id, "' expired after retention: it ended at ", absl::FormatTime(absl::RFC3339_sec, absl::FromUnixMillis(it->second), absl::UTCTimeZone()),
        " and plans are forgotten ", retention, " after they end (loom-coordinator --plan-retention); its checkpoint "
        "files, if any, are still under ", options_.checkpoint_root, "/", plan_id));
  }
  // After a restart (or past what expired_ remembers): plan ids are "<name>-<seq>", and every
  // sequence number up to plan_seq_ was a plan; one that is no longer here expired.
  const size_t dash = plan_id.rfind('-');
  int64_t seq = 0;
  if (options_.plan_retention > absl::ZeroDuration() && dash != std::string::npos &&
      absl::SimpleAtoi(plan_id.substr(dash + 1), &seq) && seq >= 1 && seq <= plan_seq_) {
    return absl::NotFoundError(absl::StrCat(
        "no plan '", plan_id, "': plan number ", seq, " expired after retention (plans are forgotten ", retention,
        " after they end, loom-coordinator --plan-retention); `loom status --all` lists the plans kept"));
  }
  return absl::NotFoundError(absl::StrCat("no plan '", plan_id, "' (`loom status --all` lists the plans)"));
}

double Coordinator::StepClock::Median() const {
  if (recent_step_seconds.size() < 3) return 0;  // too few to say what is normal
  std::vector<double> sorted = recent_step_seconds;
  std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
  return sorted[sorted.size() / 2];
}

void Coordinator::DetectHungJobs(int64_t now) {
  for (auto& [plan_id, plan] : plans_) {
    if (plan.status().state() != loom::v1::PLAN_STATE_ACTIVE) continue;
    const HangSettings settings = HangSettings::FromPlan(plan.plan());
    for (int i = 0; i < plan.status().jobs_size(); ++i) {
      const JobStatus& job = plan.status().jobs(i);
      if (job.state() != loom::v1::JOB_STATE_SCHEDULED && job.state() != loom::v1::JOB_STATE_RUNNING) continue;
      if (!IsTraining(plan.resolved(i).stage().kind())) continue;  // no optimizer steps to count
      StepClock& clock = step_clocks_[job.job_id()];
      // After a restart, count from when the attempt's ranks are all re-adopted: until then their
      // reports cannot arrive.
      if (clock.last_step_ms == 0 || adopt_deadline_.contains(job.job_id())) clock.last_step_ms = now;
      const double median = clock.Median();
      const double limit = settings.LimitSeconds(median);
      const double idle = (now - clock.last_step_ms) / 1000.0;
      if (idle <= limit) continue;
      Failure failure = ClusterFault("hung", absl::StrFormat("no step for %.1f s (median %.2f s; the plan's hang "
                                                             "policy allows %.1f s)",
                                                             idle, median, limit));
      // It stopped after its last step plus a normal step's time.
      failure.failed_at_ms = clock.last_step_ms + static_cast<int64_t>(median * 1000);
      FailAttempt(plan, i, failure);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Job helpers

GoodputLedger* Coordinator::Ledger(PlanRecord& plan, int index) {
  const JobStatus& job = plan.status().jobs(index);
  if (auto it = goodput_.find(job.job_id()); it != goodput_.end()) return &it->second;
  if (IsTerminal(job.state())) return nullptr;
  if (job.goodput().accounted_ms() > 0) {  // kept before a restart
    return &goodput_.emplace(job.job_id(), GoodputLedger::Restore(job.goodput(), job.state())).first->second;
  }
  // It could first run when the plan was submitted, or when the last stage it depends on ended.
  int64_t ready_ms = plan.status().submitted_ms();
  for (const Dependency& d : Dependencies(plan, index)) {
    if (d.stage < 0) continue;
    const JobStatus& dependency = plan.status().jobs(d.stage);
    if (dependency.state() != loom::v1::JOB_STATE_SUCCEEDED) return nullptr;  // not ready yet
    if (!dependency.transitions().empty()) ready_ms = std::max(ready_ms, dependency.transitions().rbegin()->time_ms());
  }
  return &goodput_.emplace(job.job_id(), GoodputLedger(ready_ms)).first->second;
}

void Coordinator::LiveGoodput(loom::v1::PlanStatus* status) {
  const int64_t now = clock_();
  for (JobStatus& job : *status->mutable_jobs()) {
    if (auto it = goodput_.find(job.job_id()); it != goodput_.end()) *job.mutable_goodput() = it->second.Snapshot(now);
  }
}

PlanRecord* Coordinator::FindJob(const std::string& job_id, int* index) {
  const size_t slash = job_id.rfind('/');
  if (slash == std::string::npos) return nullptr;
  auto it = plans_.find(job_id.substr(0, slash));
  if (it == plans_.end()) return nullptr;
  for (int i = 0; i < it->second.status().jobs_size(); ++i) {
    if (it->second.status().jobs(i).job_id() == job_id) {
      *index = i;
      return &it->second;
    }
  }
  return nullptr;
}

bool Coordinator::IsCurrent(const loom::v1::RankRef& rank) {
  int index = -1;
  PlanRecord* plan = FindJob(rank.job_id(), &index);
  if (plan == nullptr) return false;
  const JobStatus& job = plan->status().jobs(index);
  return HasAttemptPlaced(job.state()) && job.attempt() == rank.attempt() && rank.rank() >= 0 &&
         rank.rank() < plan->runtime(index).ranks_size();
}

void Coordinator::GrantWriteLease(PlanRecord& plan, int index) {
  const JobStatus& job = plan.status().jobs(index);
  loom::v1::JobRuntime* runtime = plan.mutable_runtime(index);
  const std::string prefix = absl::StrCat(AttemptKey(job.job_id(), job.attempt()), "/");
  if (runtime->rendezvous_secret().size() != RendezvousStore::kSecretBytes) {
    // Stored before attempts had secrets: its ranks cannot prove themselves, so they hold no lease.
    runtime->set_rendezvous_secret(NewRendezvousSecret());
  }
  if (absl::Status s = rendezvous_.OpenAttempt(prefix, runtime->rendezvous_secret()); !s.ok()) {
    Log(LogLevel::kError, kLog, "job ", job.job_id(), ": cannot open the attempt's rendezvous: ", s.message());
    return;
  }
  // Assignment.rendezvous_prefix is "<job>#<attempt>/"; a rank's store adds "/" and its key
  // (worker/rank/coordinator_store.cc), so the rank reads "lease" here.
  if (absl::Status s = rendezvous_.Set(absl::StrCat(prefix, "/lease"), "1"); !s.ok()) {
    Log(LogLevel::kError, kLog, "job ", job.job_id(), ": cannot grant the write lease: ", s.message());
  }
}

void Coordinator::AbortRanks(PlanRecord& plan, int index, const std::string& reason) {
  const JobStatus& job = plan.status().jobs(index);
  for (const auto& p : plan.runtime(index).ranks()) {
    if (p.exited_ok()) continue;
    loom::v1::CoordinatorMessage m;
    m.mutable_abort()->mutable_rank()->set_job_id(job.job_id());
    m.mutable_abort()->mutable_rank()->set_attempt(job.attempt());
    m.mutable_abort()->mutable_rank()->set_rank(p.rank());
    m.mutable_abort()->set_reason(reason);
    Send(p.worker_id(), std::move(m));
  }
  plan.mutable_runtime(index)->clear_ranks();
  progressed_.erase(job.job_id());
  ForgetStragglers(plan, index);
  adopted_.erase(job.job_id());
  adopt_deadline_.erase(job.job_id());
  // The attempt's rendezvous keys and its secret: its ranks, wherever they still run, are refused.
  rendezvous_.CloseAttempt(absl::StrCat(AttemptKey(job.job_id(), job.attempt()), "/"));
  plan.mutable_runtime(index)->clear_rendezvous_secret();
}

void Coordinator::FailAttempt(PlanRecord& plan, int index, const Failure& failure) {
  JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  loom::v1::JobRuntime* runtime = plan.mutable_runtime(index);
  if (WritesCheckpoint(plan, index) && job->has_final_checkpoint()) {
    // The stage's result is committed: what fails after it (an evaluation at the last step, a
    // worker lost before its ranks exit) is reported and costs nothing.
    runtime->set_last_error(failure.message);
    Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": ", Describe(failure), " after its final checkpoint (",
        failure.message, "); the job succeeded");
    Succeed(plan, index,
            absl::StrCat("final checkpoint ", job->final_checkpoint().path(), "; after it, ", Describe(failure), " (",
                         failure.message, ") changed nothing"));
    return;
  }
  AbortRanks(plan, index, failure.message);
  runtime->set_last_error(failure.message);
  const int64_t now = clock_();
  RecordFailure(job, failure, now);
  if (GoodputLedger* ledger = Ledger(plan, index)) ledger->Failed(now, failure.failed_at_ms > 0 ? failure.failed_at_ms : now);

  // "attempt 2 of 2" only when the cap is what ends the job.
  const bool capped = plan.plan().has_max_attempts() && job->attempt() >= plan.plan().max_attempts();
  const std::string what =
      absl::StrCat("attempt ", job->attempt(), capped ? absl::StrCat(" of ", plan.plan().max_attempts()) : "",
                   " failed (", Describe(failure), "): ", failure.message);
  std::string not_retried;
  RetryDecision retry;
  if (failure.failure_class == loom::v1::FAILURE_CLASS_PLAN) {
    not_retried = failure.cause == "repeat" ? "it failed the same way on a fresh attempt"
                                            : "retrying does not heal a fault of the plan";
  } else if (capped) {
    not_retried = "";  // the cap says it all
  } else if (failure.cause == "worker_left" || failure.cause == "preempted") {
    retry.retry = true;  // a planned departure: at once, outside the retry budget
  } else if (failure.cause == "checkpoint_bad" && RetireBadCheckpoint(plan, index, failure.message)) {
    retry.retry = true;  // from the checkpoint before it, at once, outside the retry budget
  } else {
    std::vector<int64_t> times(runtime->retry_times_ms().begin(), runtime->retry_times_ms().end());
    retry = DecideRetry(RetrySettings::FromPlan(plan.plan()), now, Jitter(), &times);
    runtime->mutable_retry_times_ms()->Assign(times.begin(), times.end());
    not_retried = retry.why_not;
  }
  if (!retry.retry) {
    SetJobState(plan, index, loom::v1::JOB_STATE_FAILED,
                not_retried.empty() ? what : absl::StrCat(what, "; not retried: ", not_retried));
    SettlePlan(plan);
  } else {
    runtime->set_retry_not_before_ms(retry.wait_ms > 0 ? now + retry.wait_ms : 0);
    if (retry.wait_ms > 0) next_retry_ms_ = next_retry_ms_ > 0 ? std::min(next_retry_ms_, now + retry.wait_ms) : now + retry.wait_ms;
    const std::string from = job->last_checkpoint().path();
    SetJobState(plan, index, loom::v1::JOB_STATE_RECOVERING,
                absl::StrCat(what, "; attempt ", job->attempt() + 1,
                             retry.wait_ms > 0 ? absl::StrFormat(" starts in %.1f s and", retry.wait_ms / 1000.0) : "",
                             from.empty() ? " starts afresh" : absl::StrCat(" resumes from ", from)));
  }
  Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": ", job->reason());
  Persist(plan);
  Announce(plan, absl::StrCat(job->stage(), ": ", Upper(job->state()), " (", job->reason(), ")"));
  dirty_schedule_ = true;
}

bool Coordinator::RetireBadCheckpoint(PlanRecord& plan, int index, const std::string& why) {
  JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  std::vector<loom::v1::CheckpointInfo>& committed = checkpoints_[plan.status().plan_id()];
  loom::v1::CheckpointInfo* bad = nullptr;
  for (loom::v1::CheckpointInfo& c : committed) {
    if (c.stage() == job->stage() && c.path() == job->resumed_from() && c.bad().empty()) bad = &c;
  }
  if (bad == nullptr) return false;  // not a committed checkpoint of this job: an ordinary crash
  bad->set_bad(why);
  ++checkpoints_bad_;
  const loom::v1::CheckpointInfo* fallback = nullptr;
  for (const loom::v1::CheckpointInfo& c : committed) {
    if (c.stage() == job->stage() && c.bad().empty() && (fallback == nullptr || c.step() > fallback->step()))
      fallback = &c;
  }
  if (fallback != nullptr) {
    *job->mutable_last_checkpoint() = *fallback;
  } else {
    job->clear_last_checkpoint();
  }
  Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": checkpoint step ", bad->step(), " at ", bad->path(),
      " is bad (", why, "); ", fallback != nullptr ? absl::StrCat("falling back to step ", fallback->step())
                                                   : std::string("no good checkpoint is left: starting afresh"));
  Persist(plan, bad);
  return true;
}

void Coordinator::MaybeFailForPlanFault(const loom::v1::RankExit& exit, const std::string& worker_id) {
  if (exit.exit_code() == 0) return;
  const Failure failure = ClassifyRankExit(exit.exit_code(), RankExitMessage(exit, worker_id));
  if (failure.failure_class != loom::v1::FAILURE_CLASS_PLAN) return;
  int index = -1;
  PlanRecord* plan = FindJob(exit.rank().job_id(), &index);
  if (plan == nullptr) return;
  JobStatus* job = plan->mutable_status()->mutable_jobs(index);
  if (job->state() != loom::v1::JOB_STATE_RECOVERING || job->attempt() != exit.rank().attempt()) return;
  // The attempt was counted as the cluster's fault when the peer's exit came first: it moves.
  --attempt_failures_[{"cluster", job->last_failure().cause()}];
  RecordFailure(job, failure, clock_());
  plan->mutable_runtime(index)->set_last_error(failure.message);
  SetJobState(*plan, index, loom::v1::JOB_STATE_FAILED,
              absl::StrCat("attempt ", job->attempt(), " failed (", Describe(failure), "): ", failure.message,
                           "; not retried: retrying does not heal a fault of the plan"));
  SettlePlan(*plan);
  Log(LogLevel::kWarning, kLog, "job ", job->job_id(), ": ", job->reason());
  Persist(*plan);
  Announce(*plan, absl::StrCat(job->stage(), ": FAILED (", job->reason(), ")"));
  dirty_schedule_ = true;
}

void Coordinator::RecordFailure(JobStatus* job, const Failure& failure, int64_t now) {
  loom::v1::AttemptFailure* last = job->mutable_last_failure();
  last->set_attempt(job->attempt());
  last->set_failure_class(failure.failure_class);
  last->set_cause(failure.cause);
  last->set_message(failure.message);
  last->set_time_ms(now);
  ++attempt_failures_[{failure.failure_class == loom::v1::FAILURE_CLASS_PLAN ? "plan" : "cluster", failure.cause}];
}

double Coordinator::Jitter() {
  if (options_.jitter) return options_.jitter();
  return absl::Uniform(bitgen_, 0.0, 1.0);
}

void Coordinator::SetJobState(PlanRecord& plan, int index, JobState to, const std::string& reason) {
  JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  const int64_t now = clock_();
  if (absl::Status s = Transition(job, to, reason, now); !s.ok()) {
    Log(LogLevel::kError, kLog, s.message());
    return;
  }
  if (IsTerminal(to)) {
    // The ledger ends with the job; its totals stay in the job's status.
    if (GoodputLedger* ledger = Ledger(plan, index)) {
      ledger->Ended(now, to == loom::v1::JOB_STATE_SUCCEEDED, 0);
      *job->mutable_goodput() = ledger->Closed();
    }
    goodput_.erase(job->job_id());
  }
}

// Stages that end in a committed checkpoint; an eval stage's results are its reports alone.
bool Coordinator::WritesCheckpoint(const PlanRecord& plan, int index) {
  return plan.resolved(index).stage().kind() != loom::v1::STAGE_KIND_EVAL;
}

void Coordinator::MaybeSucceed(PlanRecord& plan, int index) {
  JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  if (!HasAttemptPlaced(job->state())) return;
  const bool writes_checkpoint = WritesCheckpoint(plan, index);
  if (writes_checkpoint && !job->has_final_checkpoint()) return;
  for (const auto& p : plan.runtime(index).ranks()) {
    if (!p.exited_ok()) return;
  }
  Succeed(plan, index,
          writes_checkpoint ? absl::StrCat("final checkpoint ", job->final_checkpoint().path())
                            : std::string("measured (an eval stage writes no checkpoint)"));
}

void Coordinator::Succeed(PlanRecord& plan, int index, const std::string& reason) {
  JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  bool running = false;
  for (const auto& p : plan.runtime(index).ranks()) running |= !p.exited_ok();
  if (running) AbortRanks(plan, index, "the job succeeded: its final checkpoint is committed");
  rendezvous_.CloseAttempt(absl::StrCat(AttemptKey(job->job_id(), job->attempt()), "/"));
  plan.mutable_runtime(index)->clear_rendezvous_secret();
  plan.mutable_runtime(index)->clear_ranks();
  progressed_.erase(job->job_id());
  step_clocks_.erase(job->job_id());
  ForgetStragglers(plan, index);
  SetJobState(plan, index, loom::v1::JOB_STATE_SUCCEEDED, reason);
  SettlePlan(plan);
  Persist(plan);
  if (WritesCheckpoint(plan, index)) SweepStageDir(plan, index);
  Log(LogLevel::kInfo, kLog, "job ", job->job_id(), " succeeded in attempt ", job->attempt());
  Announce(plan, absl::StrCat(job->stage(), ": SUCCEEDED"));
  dirty_schedule_ = true;
}

void Coordinator::SettlePlan(PlanRecord& plan) {
  bool changed = true;
  while (changed) {
    changed = false;
    for (int i = 0; i < plan.status().jobs_size(); ++i) {
      if (plan.status().jobs(i).state() != loom::v1::JOB_STATE_PENDING) continue;
      for (const Dependency& d : Dependencies(plan, i)) {
        if (d.stage < 0) continue;
        const JobState s = plan.status().jobs(d.stage).state();
        if (s == loom::v1::JOB_STATE_FAILED || s == loom::v1::JOB_STATE_CANCELLED) {
          SetJobState(
              plan, i,
              s == loom::v1::JOB_STATE_FAILED ? loom::v1::JOB_STATE_FAILED : loom::v1::JOB_STATE_CANCELLED,
              absl::StrCat("stage '", plan.status().jobs(d.stage).stage(), "' ",
                           s == loom::v1::JOB_STATE_FAILED ? "failed" : "was cancelled"));
          changed = true;
          break;
        }
      }
    }
  }
  const loom::v1::PlanState state = DerivePlanState(plan.status());
  if (state != plan.status().state()) {
    plan.mutable_status()->set_state(state);
    if (state != loom::v1::PLAN_STATE_ACTIVE) {
      plan.mutable_status()->set_ended_ms(clock_());
      ended_plans_.insert({plan.status().ended_ms(), plan.status().plan_id()});
      Log(LogLevel::kInfo, kLog, "plan ", plan.status().plan_id(), " ended: ", EnumName(state));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint retention

std::string Coordinator::StageDir(const std::string& plan_id, const std::string& stage) const {
  return absl::StrCat(options_.checkpoint_root, "/", plan_id, "/", stage);
}

std::string Coordinator::AttemptDir(const std::string& plan_id, const std::string& stage, int attempt) const {
  return absl::StrCat(StageDir(plan_id, stage), "/attempt-", attempt);
}

void Coordinator::ApplyRetention(PlanRecord& plan, int index) {
  const JobStatus& job = plan.status().jobs(index);
  const int keep_last = plan.resolved(index).stage().checkpoint().keep_last();
  if (keep_last <= 0) return;  // keep every checkpoint
  std::vector<loom::v1::CheckpointInfo>& committed = checkpoints_[plan.status().plan_id()];
  // What the plan still needs of this stage: steps named by `stage@STEP`, and the newest `last_k`
  // good ones for an averaging window.
  std::set<int64_t> named_steps;
  int window = 0;
  for (int j = 0; j < plan.status().jobs_size(); ++j) {
    for (const Dependency& d : Dependencies(plan, j)) {
      if (d.stage == index && d.step >= 0) named_steps.insert(d.step);
    }
    const loom::v1::Stage& stage = plan.resolved(j).stage();
    if (stage.kind() == loom::v1::STAGE_KIND_AVERAGE && stage.average().has_last_k() &&
        stage.from() == job.stage()) {
      window = std::max(window, stage.average().last_k());
    }
  }
  std::vector<const loom::v1::CheckpointInfo*> good;
  for (const loom::v1::CheckpointInfo& c : committed) {
    if (c.stage() == job.stage() && c.bad().empty()) good.push_back(&c);
  }
  std::sort(good.begin(), good.end(), [](auto* a, auto* b) { return a->step() > b->step(); });
  std::set<std::string> kept;
  for (int i = 0; i < static_cast<int>(good.size()) && i < std::max(keep_last, window); ++i) {
    kept.insert(good[i]->path());
  }
  const int64_t newest = good.empty() ? -1 : good.front()->step();
  std::vector<loom::v1::CheckpointInfo> doomed;
  for (const loom::v1::CheckpointInfo& c : committed) {
    if (c.stage() != job.stage() || kept.count(c.path()) > 0) continue;
    if (c.step() >= newest) continue;  // only once a newer one of the job is committed
    if (named_steps.count(c.step()) > 0 || c.path() == job.resumed_from() || c.final()) continue;
    doomed.push_back(c);
  }
  if (!doomed.empty()) DropCheckpoints(plan, doomed, absl::StrCat("checkpoint.keep_last: ", keep_last));
}

void Coordinator::DropCheckpoints(PlanRecord& plan, const std::vector<loom::v1::CheckpointInfo>& doomed,
                                  const std::string& why) {
  std::vector<loom::v1::CheckpointInfo>& committed = checkpoints_[plan.status().plan_id()];
  StoreWrite write;
  for (const loom::v1::CheckpointInfo& c : doomed) write.deleted_checkpoints.push_back(&c);
  // Forgotten first (durably), deleted after: a crash in between leaves a directory no one lists,
  // which the sweep at the job's end removes, and never a listed checkpoint that is gone.
  if (absl::Status s = store_->Write(write); !s.ok()) {
    Log(LogLevel::kError, kLog, "plan ", plan.status().plan_id(), ": retention keeps ", doomed.size(),
        " checkpoints it could not forget: ", s.message());
    return;
  }
  for (const loom::v1::CheckpointInfo& c : doomed) {
    committed.erase(std::remove_if(committed.begin(), committed.end(),
                                   [&](const loom::v1::CheckpointInfo& x) {
                                     return x.stage() == c.stage() && x.step() == c.step() && x.path() == c.path();
                                   }),
                    committed.end());
    deletions_.push_back({c.path()});
    ++checkpoints_deleted_;
    Log(LogLevel::kInfo, kLog, "plan ", plan.status().plan_id(), ": deleting checkpoint ", c.stage(), " step ",
        c.step(), " at ", c.path(), " (", why, ")");
  }
}

void Coordinator::SweepStageDir(const PlanRecord& plan, int index) {
  const JobStatus& job = plan.status().jobs(index);
  Deletion sweep;
  sweep.path = StageDir(plan.status().plan_id(), job.stage());
  sweep.sweep = true;
  for (const loom::v1::CheckpointInfo& c : checkpoints_[plan.status().plan_id()]) {
    if (c.stage() == job.stage()) sweep.keep.push_back(c.path());
  }
  deletions_.push_back(std::move(sweep));
}

// ---------------------------------------------------------------------------------------------
// Plumbing

void Coordinator::Persist(PlanRecord& plan, const loom::v1::CheckpointInfo* checkpoint) {
  for (JobStatus& job : *plan.mutable_status()->mutable_jobs()) {
    if (auto it = goodput_.find(job.job_id()); it != goodput_.end()) *job.mutable_goodput() = it->second.Closed();
  }
  StoreWrite write;
  write.plans.push_back(&plan);
  if (checkpoint != nullptr) write.checkpoints.push_back(checkpoint);
  if (absl::Status s = store_->Write(write); !s.ok()) {
    // The in-memory state is ahead of the disk; a restart would forget this change.
    Log(LogLevel::kError, kLog, "plan ", plan.status().plan_id(), ": ", s.message());
  }
}

void Coordinator::PersistWorker(const Worker& w) {
  StoreWrite write;
  write.workers.push_back(&w.status);
  if (absl::Status s = store_->Write(write); !s.ok()) Log(LogLevel::kError, kLog, s.message());
}

void Coordinator::Send(const std::string& worker_id, loom::v1::CoordinatorMessage message) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.link == nullptr) return;
  outbox_.push_back({it->second.link, std::move(message)});
}

void Coordinator::Announce(PlanRecord& plan, const std::string& message) {
  const std::string& id = plan.status().plan_id();
  ++plan_version_[id];
  if (!message.empty()) last_event_[id] = message;
}

void Coordinator::RefreshWorkerStatus(Worker& w) {
  w.status.set_state(w.link == nullptr    ? loom::v1::WORKER_STATE_LOST
                     : w.occupied.empty() ? loom::v1::WORKER_STATE_IDLE
                                          : loom::v1::WORKER_STATE_BUSY);
  w.status.set_slots_used(static_cast<int>(w.occupied.size()));
  w.status.clear_ranks();
  for (const auto& [device, rank] : w.occupied) {
    w.status.add_ranks(absl::StrCat(rank.job_id(), "#", rank.attempt(), "/rank", rank.rank()));
  }
}

void Coordinator::Flush() {
  std::vector<Deletion> deletions;
  {
    absl::MutexLock order(&flush_mu_);
    std::vector<Outgoing> out;
    {
      absl::MutexLock lock(&mu_);
      out.swap(outbox_);
      deletions.swap(deletions_);
    }
    for (Outgoing& o : out) {
      if (o.end) {
        o.link->End();
      } else {
        o.link->Send(o.message);
      }
    }
  }
  // Deleting a large checkpoint takes a while on a shared file system: messages do not wait for
  // it. Whatever is deleted here was already forgotten (durably) under mu_.
  for (const Deletion& d : deletions) {
    // Never outside the checkpoint root, whatever a record says.
    if (!IsInside(d.path, options_.checkpoint_root) || d.path == options_.checkpoint_root) continue;
    if (absl::Status s = d.sweep ? SweepAttempts(d.path, d.keep) : RemoveTree(d.path); !s.ok()) {
      Log(LogLevel::kWarning, kLog, "retention: ", s.message());
    }
  }
}

MetricsSnapshot Coordinator::Metrics() {
  absl::MutexLock lock(&mu_);
  MetricsSnapshot m;
  const int64_t now = clock_();
  for (const auto& [id, plan] : plans_) {
    ++m.plans[plan.status().state()];
    for (const JobStatus& job : plan.status().jobs()) {
      MetricsSnapshot::Job& j = m.jobs.emplace_back();
      j.plan_id = id;
      j.stage = job.stage();
      j.state = job.state();
      j.attempt = job.attempt();
      for (const loom::v1::Straggler& s : job.stragglers()) j.stragglers.push_back(s.rank());
      j.plan_active = plan.status().state() == loom::v1::PLAN_STATE_ACTIVE;
      j.plan_ended_ms = plan.status().ended_ms();
      j.last_checkpoint_ms = job.last_checkpoint().committed_ms();
      j.last_checkpoint_bytes = job.last_checkpoint().bytes();
    }
  }
  for (auto& [id, w] : workers_) {
    RefreshWorkerStatus(w);
    ++m.workers[w.status.state()];
    if (w.link != nullptr) m.heartbeat_age_seconds[id] = (now - w.status.last_heartbeat_ms()) / 1000.0;
    if (w.status.last_heartbeat_ms() > 0) m.last_heartbeat_seconds[id] = w.status.last_heartbeat_ms() / 1000.0;
  }
  m.pending_jobs = pending_jobs_;
  m.checkpoints_committed = checkpoints_committed_;
  m.checkpoints_bad = checkpoints_bad_;
  m.checkpoints_deleted = checkpoints_deleted_;
  m.checkpoint_save_failures = checkpoint_save_failures_;
  m.attempt_failures = attempt_failures_;
  m.fenced_reports = fenced_reports_;
  m.dropped_datagrams = {{"unknown_connection", datagrams_unknown_connection_},
                         {"bad_mac", datagrams_bad_mac_},
                         {"replayed", datagrams_replayed_}};
  for (const auto& [id, plan] : plans_) {
    if (plan.status().state() != loom::v1::PLAN_STATE_ACTIVE && now - plan.status().ended_ms() > kGoodputRetentionMs)
      continue;
    for (const JobStatus& job : plan.status().jobs()) {
      auto it = goodput_.find(job.job_id());
      if (it == goodput_.end() && job.goodput().accounted_ms() == 0) continue;  // not ready to run yet
      m.goodput.push_back({id, job.stage(), it != goodput_.end() ? it->second.Closed() : job.goodput()});
    }
  }
  return m;
}

}  // namespace loom::coordinator
