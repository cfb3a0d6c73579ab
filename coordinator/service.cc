#include "coordinator/service.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/plan_io.h"
#include "coordinator/authorization.h"

namespace loom::coordinator {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status PlanServiceImpl::SubmitPlan(grpc::ServerContext* context,
                                         const loom::v1::SubmitPlanRequest* request,
                                         loom::v1::SubmitPlanResponse* response) {
  Caller caller;
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"submitter", "admin"}, "SubmitPlan", &caller);
      !s.ok()) {
    return s;
  }
  loom::v1::TrainingPlan plan = request->plan();
  if (!request->plan_yaml().empty()) {
    if (request->has_plan()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "SubmitPlanRequest: set either `plan` or `plan_yaml`, not both");
    }
    // The same reading as `loom validate`: parse errors and validation errors, with lines.
    absl::StatusOr<loom::v1::TrainingPlan> read = LoadPlanText(
        request->plan_yaml(), PlanFormat::kYaml, request->source().empty() ? "the plan" : request->source());
    if (!read.ok()) return ToGrpc(read.status());
    plan = std::move(*read);
  }
  absl::StatusOr<std::string> id = coordinator_->SubmitPlan(plan, request->source(), PrincipalOf(caller));
  if (!id.ok()) return ToGrpc(id.status());
  response->set_plan_id(*id);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::GetPlan(grpc::ServerContext* context, const loom::v1::GetPlanRequest* request,
                                      loom::v1::GetPlanResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "GetPlan");
      !s.ok())
    return s;
  absl::StatusOr<loom::v1::GetPlanResponse> r = coordinator_->GetPlan(request->plan_id());
  if (!r.ok()) return ToGrpc(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ListPlans(grpc::ServerContext* context,
                                        const loom::v1::ListPlansRequest* request,
                                        loom::v1::ListPlansResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "ListPlans");
      !s.ok())
    return s;
  *response = coordinator_->ListPlans(request->include_finished());
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::WatchPlan(grpc::ServerContext* context,
                                        const loom::v1::WatchPlanRequest* request,
                                        grpc::ServerWriter<loom::v1::PlanEvent>* writer) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "WatchPlan");
      !s.ok())
    return s;
  uint64_t version = 0;
  bool first = true;
  while (!context->IsCancelled() && !shutting_down_) {
    absl::StatusOr<loom::v1::PlanEvent> event = coordinator_->WaitForChange(
        request->plan_id(), &version, first ? absl::ZeroDuration() : absl::Milliseconds(500));
    if (!event.ok()) return ToGrpc(event.status());
    if (!writer->Write(*event)) return grpc::Status::OK;
    first = false;
    if (event->status().state() != loom::v1::PLAN_STATE_ACTIVE) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watch ended");
}

grpc::Status PlanServiceImpl::CancelPlan(grpc::ServerContext* context,
                                         const loom::v1::CancelPlanRequest* request,
                                         loom::v1::CancelPlanResponse*) {
  Caller caller;
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"submitter", "admin"}, "CancelPlan", &caller);
      !s.ok()) {
    return s;
  }
  if (caller.tls && caller.role != "admin") {
    // A submitter cancels only what it submitted.
    absl::StatusOr<loom::v1::GetPlanResponse> plan = coordinator_->GetPlan(request->plan_id());
    if (!plan.ok()) return ToGrpc(plan.status());
    const loom::v1::Principal& owner = plan->status().submitted_by();
    if (owner.name().empty()) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("plan ", request->plan_id(),
                                       " has no recorded submitter; only an admin may cancel it"));
    }
    if (owner.name() != caller.name) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("plan ", request->plan_id(), " was submitted by ", owner.name(),
                                       "; only ", owner.name(), " or an admin may cancel it (", caller.name,
                                       " has role ", caller.role, ")"));
    }
  }
  return ToGrpc(coordinator_->CancelPlan(request->plan_id(), request->reason()));
}

grpc::Status PlanServiceImpl::ListWorkers(grpc::ServerContext* context, const loom::v1::ListWorkersRequest*,
                                          loom::v1::ListWorkersResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "ListWorkers");
      !s.ok())
    return s;
  *response = coordinator_->ListWorkers();
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ListCheckpoints(grpc::ServerContext* context,
                                              const loom::v1::ListCheckpointsRequest* request,
                                              loom::v1::ListCheckpointsResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "ListCheckpoints");
      !s.ok())
    return s;
  absl::StatusOr<loom::v1::ListCheckpointsResponse> r =
      coordinator_->ListCheckpoints(request->plan_id(), request->stage());
  if (!r.ok()) return ToGrpc(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::GetMetrics(grpc::ServerContext* context,
                                         const loom::v1::GetMetricsRequest* request,
                                         loom::v1::GetMetricsResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "GetMetrics");
      !s.ok())
    return s;
  absl::StatusOr<loom::v1::GetPlanResponse> plan = coordinator_->GetPlan(request->plan_id());
  if (!plan.ok()) return ToGrpc(plan.status());
  std::vector<std::string> stages;
  for (const loom::v1::JobStatus& job : plan->status().jobs()) {
    if (request->stage().empty() || job.stage() == request->stage()) stages.push_back(job.stage());
  }
  if (stages.empty()) {
    std::vector<std::string> names;
    for (const loom::v1::JobStatus& job : plan->status().jobs()) names.push_back(job.stage());
    return ToGrpc(
        absl::NotFoundError(absl::StrCat("plan '", request->plan_id(), "' has no stage '", request->stage(),
                                         "' (stages: ", absl::StrJoin(names, ", "), ")")));
  }
  // Under gRPC's default 4 MiB message limit, with room to spare.
  constexpr size_t kMaxResponseBytes = 3 << 20;
  for (const std::string& stage : stages) {
    absl::StatusOr<std::vector<loom::v1::MetricPoint>> points =
        coordinator_->history().Read(request->plan_id(), stage);
    if (!points.ok()) return ToGrpc(points.status());
    for (loom::v1::MetricPoint& p : *points) *response->add_points() = std::move(p);
    if (response->ByteSizeLong() > kMaxResponseBytes) {
      return ToGrpc(absl::ResourceExhaustedError(
          absl::StrCat("the run history of plan '", request->plan_id(), "' is over ", kMaxResponseBytes >> 20,
                       " MiB; ask for one stage at a time (loom metrics --stage)")));
    }
  }
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ReadLog(grpc::ServerContext* context, const loom::v1::ReadLogRequest* request,
                                      loom::v1::ReadLogResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"viewer", "submitter", "admin"}, "ReadLog");
      !s.ok())
    return s;
  absl::StatusOr<loom::v1::ReadLogResponse> r = coordinator_->ReadRankLog(*request, absl::Seconds(10));
  if (!r.ok()) return ToGrpc(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::DrainWorker(grpc::ServerContext* context,
                                          const loom::v1::DrainWorkerRequest* request,
                                          loom::v1::DrainWorkerResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"admin"}, "DrainWorker"); !s.ok()) return s;
  absl::StatusOr<loom::v1::WorkerStatus> worker =
      coordinator_->DrainWorker(request->worker_id(), request->undrain());
  if (!worker.ok()) return ToGrpc(worker.status());
  *response->mutable_worker() = std::move(*worker);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::GetStorage(grpc::ServerContext* context, const loom::v1::GetStorageRequest*,
                                           loom::v1::StorageInfo* response) {
  if (grpc::Status s = Authorize(context, {"worker"}, "GetStorage"); !s.ok()) return s;
  *response = coordinator_->Storage();
  return grpc::Status::OK;
}

namespace {

// One worker's stream. Messages up are handed to the coordinator as they are read; messages
// down (WorkerLink::Send, from any thread) are queued and written one at a time. StartWrite and
// Finish are called outside the lock (gRPC may run OnWriteDone/OnDone inline); whoever set
// `writing_` owns the next write, and Finish is called once, when no write is in flight.
class WorkerStream final
    : public grpc::ServerBidiReactor<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage> {
 public:
  WorkerStream(Coordinator* coordinator, grpc::CallbackServerContext* context)
      : coordinator_(coordinator), context_(context) {
    StartRead(&in_);
  }

  // The coordinator's handle on the stream; it may outlive the stream (then Send fails).
  class Link : public WorkerLink {
   public:
    explicit Link(WorkerStream* stream) : stream_(stream) {}
    bool Send(const loom::v1::CoordinatorMessage& message) override {
      WorkerStream* stream;
      const loom::v1::CoordinatorMessage* next = nullptr;
      {
        absl::MutexLock lock(&mu_);
        stream = stream_;
        if (stream == nullptr || !stream->Enqueue(message, &next)) return false;
      }
      // This Send owns the write: the stream cannot finish before OnWriteDone.
      if (next != nullptr) stream->StartWrite(next);
      return true;
    }
    // Finishes the call with UNAVAILABLE unless it is ending already (or a write in flight
    // finishes it); the worker sees its stream end and registers again.
    void End() override {
      WorkerStream* stream;
      grpc::Status finish_with;
      {
        absl::MutexLock lock(&mu_);
        stream = stream_;
        if (stream == nullptr ||
            !stream->BeginEnd(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                           "the coordinator declared this worker lost; register again"),
                              &finish_with)) {
          return;
        }
      }
      // This End owns the Finish: the stream cannot be done (and deleted) before it.
      stream->Finish(finish_with);
    }
    void Detach() {
      absl::MutexLock lock(&mu_);
      stream_ = nullptr;
    }
    absl::Mutex mu_;
    WorkerStream* stream_ ABSL_GUARDED_BY(mu_);
  };

  void OnReadDone(bool ok) override {
    if (!ok) {
      Close(grpc::Status::OK, /*disconnected=*/true);
      return;
    }
    if (link_ == nullptr) {
      if (in_.body_case() != loom::v1::WorkerMessage::kRegister) {
        Close(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                           "the first message of a worker stream must be `register`"),
              false);
        return;
      }
      // A worker speaks only as the worker its certificate names.
      if (grpc::Status s = AuthorizeWorker(context_, in_.register_().worker_id()); !s.ok()) {
        Close(s, false);
        return;
      }
      link_ = std::make_shared<Link>(this);
      worker_id_ = in_.register_().worker_id();
      absl::StatusOr<int64_t> connection = coordinator_->RegisterWorker(in_.register_(), link_);
      if (!connection.ok()) {
        Close(ToGrpc(connection.status()), false);
        return;
      }
      connection_ = *connection;
    } else {
      coordinator_->HandleWorkerMessage(worker_id_, connection_, in_);
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    const loom::v1::CoordinatorMessage* next = nullptr;
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      queue_.pop_front();  // the message just written
      if (!ok) closed_ = true;
      if (!closed_ && !queue_.empty()) {
        next = &queue_.front();
      } else {
        writing_ = false;
        finish = closed_ && !finished_;
        finished_ |= finish;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (finish) Finish(status_);
  }

  void OnDone() override {
    if (link_ != nullptr) link_->Detach();
    delete this;
  }

 private:
  // Queues `message`; *next = the message to write now (null when a write is in flight). False
  // when the stream is closing.
  bool Enqueue(const loom::v1::CoordinatorMessage& message, const loom::v1::CoordinatorMessage** next) {
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    queue_.push_back(message);
    if (writing_) return true;
    writing_ = true;
    *next = &queue_.front();
    return true;
  }

  // Marks the stream closing with `status`; true when the caller owns the Finish (no write in
  // flight, none called yet), with the status in *finish_with. Already closing: false.
  bool BeginEnd(const grpc::Status& status, grpc::Status* finish_with) {
    absl::MutexLock lock(&mu_);
    if (closed_) return false;
    closed_ = true;
    status_ = status;
    if (writing_ || finished_) return false;  // OnWriteDone finishes
    finished_ = true;
    *finish_with = status_;
    return true;
  }

  void Close(grpc::Status status, bool disconnected) {
    if (link_ != nullptr) link_->Detach();
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (!closed_) status_ = std::move(status);  // the first reason to close stands
      closed_ = true;
      finish = !writing_ && !finished_;
      finished_ |= finish;
    }
    if (disconnected && link_ != nullptr) {
      coordinator_->Disconnected(worker_id_, connection_,
                                 context_->IsCancelled() ? "cancelled" : "closed by the worker");
    }
    if (finish) Finish(status_);
  }

  Coordinator* const coordinator_;
  grpc::CallbackServerContext* const context_;
  loom::v1::WorkerMessage in_;
  std::shared_ptr<Link> link_;
  std::string worker_id_;
  int64_t connection_ = 0;
  absl::Mutex mu_;
  std::deque<loom::v1::CoordinatorMessage> queue_;  // front: the message being written
  bool writing_ = false, closed_ = false, finished_ = false;
  grpc::Status status_;
};

}  // namespace

grpc::ServerBidiReactor<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage>* WorkerServiceImpl::Connect(
    grpc::CallbackServerContext* context) {
  return new WorkerStream(coordinator_, context);
}

namespace {

// Every rendezvous call acts for one attempt, proved by its secret (RendezvousStore).
RendezvousStore::Credential CredentialOf(const loom::v1::RendezvousAttempt& attempt) {
  return {attempt.prefix(), attempt.secret()};
}

}  // namespace

grpc::Status RendezvousServiceImpl::Set(grpc::ServerContext* context, const loom::v1::RendezvousSetRequest* request,
                                        loom::v1::RendezvousSetResponse*) {
  if (grpc::Status s = Authorize(context, {"rank", "worker"}, "Rendezvous.Set"); !s.ok()) return s;
  return ToGrpc(store_->Set(CredentialOf(request->attempt()), request->key(), request->value()));
}

grpc::Status RendezvousServiceImpl::Get(grpc::ServerContext* context,
                                        const loom::v1::RendezvousGetRequest* request,
                                        loom::v1::RendezvousGetResponse* response) {
  if (grpc::Status s = Authorize(context, {"rank", "worker"}, "Rendezvous.Get"); !s.ok()) return s;
  absl::Duration wait = absl::Milliseconds(std::max<int64_t>(0, request->wait_ms()));
  // Never wait past the caller's own deadline.
  const auto remaining = context->deadline() - std::chrono::system_clock::now();
  wait = std::min(wait, absl::FromChrono(std::chrono::duration_cast<std::chrono::milliseconds>(remaining)));
  absl::StatusOr<std::vector<std::string>> values =
      store_->Get(CredentialOf(request->attempt()), {request->keys().begin(), request->keys().end()},
                  std::max(wait, absl::ZeroDuration()));
  if (!values.ok()) return ToGrpc(values.status());
  for (std::string& v : *values) response->add_values(std::move(v));
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Add(grpc::ServerContext* context, const loom::v1::RendezvousAddRequest* request,
                                        loom::v1::RendezvousAddResponse* response) {
  if (grpc::Status s = Authorize(context, {"rank", "worker"}, "Rendezvous.Add"); !s.ok()) return s;
  absl::StatusOr<int64_t> value = store_->Add(CredentialOf(request->attempt()), request->key(), request->delta());
  if (!value.ok()) return ToGrpc(value.status());
  response->set_value(*value);
  return grpc::Status::OK;
}

}  // namespace loom::coordinator
