#include "coordinator/service.h"

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"

namespace loom::coordinator {

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status PlanServiceImpl::SubmitPlan(grpc::ServerContext*, const loom::v1::SubmitPlanRequest* request,
                                         loom::v1::SubmitPlanResponse* response) {
  absl::StatusOr<std::string> id = coordinator_->SubmitPlan(request->plan(), request->source());
  if (!id.ok()) return ToGrpc(id.status());
  response->set_plan_id(*id);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::GetPlan(grpc::ServerContext*, const loom::v1::GetPlanRequest* request,
                                      loom::v1::GetPlanResponse* response) {
  absl::StatusOr<loom::v1::GetPlanResponse> r = coordinator_->GetPlan(request->plan_id());
  if (!r.ok()) return ToGrpc(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ListPlans(grpc::ServerContext*, const loom::v1::ListPlansRequest* request,
                                        loom::v1::ListPlansResponse* response) {
  *response = coordinator_->ListPlans(request->include_finished());
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::WatchPlan(grpc::ServerContext* context,
                                        const loom::v1::WatchPlanRequest* request,
                                        grpc::ServerWriter<loom::v1::PlanEvent>* writer) {
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

grpc::Status PlanServiceImpl::CancelPlan(grpc::ServerContext*, const loom::v1::CancelPlanRequest* request,
                                         loom::v1::CancelPlanResponse*) {
  return ToGrpc(coordinator_->CancelPlan(request->plan_id(), request->reason()));
}

grpc::Status PlanServiceImpl::ListWorkers(grpc::ServerContext*, const loom::v1::ListWorkersRequest*,
                                          loom::v1::ListWorkersResponse* response) {
  *response = coordinator_->ListWorkers();
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ListCheckpoints(grpc::ServerContext*,
                                              const loom::v1::ListCheckpointsRequest* request,
                                              loom::v1::ListCheckpointsResponse* response) {
  absl::StatusOr<loom::v1::ListCheckpointsResponse> r =
      coordinator_->ListCheckpoints(request->plan_id(), request->stage());
  if (!r.ok()) return ToGrpc(r.status());
  *response = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::DrainWorker(grpc::ServerContext*, const loom::v1::DrainWorkerRequest* request,
                                          loom::v1::DrainWorkerResponse* response) {
  absl::StatusOr<loom::v1::WorkerStatus> worker = coordinator_->DrainWorker(request->worker_id(), request->undrain());
  if (!worker.ok()) return ToGrpc(worker.status());
  *response->mutable_worker() = std::move(*worker);
  return grpc::Status::OK;
}

grpc::Status WorkerServiceImpl::GetStorage(grpc::ServerContext*, const loom::v1::GetStorageRequest*,
                                           loom::v1::StorageInfo* response) {
  *response = coordinator_->Storage();
  return grpc::Status::OK;
}

namespace {

// Writes to one worker's stream. The handler thread reads while the coordinator writes, which
// gRPC's synchronous streams allow (one reader and one writer at a time).
class StreamLink : public WorkerLink {
 public:
  StreamLink(grpc::ServerContext* context,
             grpc::ServerReaderWriter<loom::v1::CoordinatorMessage, loom::v1::WorkerMessage>* stream)
      : context_(context), stream_(stream) {}
  bool Send(const loom::v1::CoordinatorMessage& message) override {
    absl::MutexLock lock(&mu_);
    if (stream_ == nullptr) return false;
    return stream_->Write(message);
  }
  // Cancels the call: the handler's Read returns false and the worker sees the stream end.
  void End() override {
    absl::MutexLock lock(&mu_);
    if (context_ != nullptr) context_->TryCancel();
  }
  // Called before the handler returns: the stream and its context die with it.
  void Close() {
    absl::MutexLock lock(&mu_);
    stream_ = nullptr;
    context_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  grpc::ServerContext* context_ ABSL_GUARDED_BY(mu_);
  grpc::ServerReaderWriter<loom::v1::CoordinatorMessage, loom::v1::WorkerMessage>* stream_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::Status WorkerServiceImpl::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<loom::v1::CoordinatorMessage, loom::v1::WorkerMessage>* stream) {
  loom::v1::WorkerMessage first;
  if (!stream->Read(&first))
    return grpc::Status(grpc::StatusCode::CANCELLED, "stream closed before registration");
  if (first.body_case() != loom::v1::WorkerMessage::kRegister) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the first message of a worker stream must be `register`");
  }
  auto link = std::make_shared<StreamLink>(context, stream);
  absl::StatusOr<int64_t> connection = coordinator_->RegisterWorker(first.register_(), link);
  if (!connection.ok()) {
    link->Close();
    return ToGrpc(connection.status());
  }
  const std::string worker_id = first.register_().worker_id();
  loom::v1::WorkerMessage message;
  while (stream->Read(&message)) coordinator_->HandleWorkerMessage(worker_id, *connection, message);
  link->Close();
  coordinator_->Disconnected(worker_id, *connection,
                             context->IsCancelled() ? "cancelled" : "closed by the worker");
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Set(grpc::ServerContext*, const loom::v1::RendezvousSetRequest* request,
                                        loom::v1::RendezvousSetResponse*) {
  return ToGrpc(store_->Set(request->key(), request->value()));
}

grpc::Status RendezvousServiceImpl::Get(grpc::ServerContext* context,
                                        const loom::v1::RendezvousGetRequest* request,
                                        loom::v1::RendezvousGetResponse* response) {
  absl::Duration wait = absl::Milliseconds(std::max<int64_t>(0, request->wait_ms()));
  // Never wait past the caller's own deadline.
  const auto remaining = context->deadline() - std::chrono::system_clock::now();
  wait = std::min(wait, absl::FromChrono(std::chrono::duration_cast<std::chrono::milliseconds>(remaining)));
  absl::StatusOr<std::vector<std::string>> values =
      store_->Get({request->keys().begin(), request->keys().end()}, std::max(wait, absl::ZeroDuration()));
  if (!values.ok()) return ToGrpc(values.status());
  for (std::string& v : *values) response->add_values(std::move(v));
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Add(grpc::ServerContext*, const loom::v1::RendezvousAddRequest* request,
                                        loom::v1::RendezvousAddResponse* response) {
  absl::StatusOr<int64_t> value = store_->Add(request->key(), request->delta());
  if (!value.ok()) return ToGrpc(value.status());
  response->set_value(*value);
  return grpc::Status::OK;
}

}  // namespace loom::coordinator
