// gRPC front of the coordinator: PlanService (clients), WorkerService (one bidirectional stream
// per worker daemon) and RendezvousService, all over one Coordinator.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>

#include "coordinator/coordinator.h"
#include "coordinator/token_store.h"
#include "loom/v1/coordinator.grpc.pb.h"

namespace loom::coordinator {

// absl::Status -> grpc::Status with the same code and message.
grpc::Status ToGrpc(const absl::Status& status);

class PlanServiceImpl final : public loom::v1::PlanService::Service {
 public:
  // `tokens` (may be null: no bearer tokens) authenticates clients without a certificate.
  explicit PlanServiceImpl(Coordinator* coordinator, TokenStore* tokens = nullptr)
      : coordinator_(coordinator), tokens_(tokens) {}
  // Ends every WatchPlan stream (for shutdown).
  void Shutdown() { shutting_down_ = true; }

  grpc::Status SubmitPlan(grpc::ServerContext*, const loom::v1::SubmitPlanRequest*,
                          loom::v1::SubmitPlanResponse*) override;
  grpc::Status GetPlan(grpc::ServerContext*, const loom::v1::GetPlanRequest*,
                       loom::v1::GetPlanResponse*) override;
  grpc::Status ListPlans(grpc::ServerContext*, const loom::v1::ListPlansRequest*,
                         loom::v1::ListPlansResponse*) override;
  grpc::Status WatchPlan(grpc::ServerContext*, const loom::v1::WatchPlanRequest*,
                         grpc::ServerWriter<loom::v1::PlanEvent>*) override;
  grpc::Status CancelPlan(grpc::ServerContext*, const loom::v1::CancelPlanRequest*,
                          loom::v1::CancelPlanResponse*) override;
  grpc::Status ListWorkers(grpc::ServerContext*, const loom::v1::ListWorkersRequest*,
                           loom::v1::ListWorkersResponse*) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const loom::v1::ListCheckpointsRequest*,
                               loom::v1::ListCheckpointsResponse*) override;
  grpc::Status DrainWorker(grpc::ServerContext*, const loom::v1::DrainWorkerRequest*,
                           loom::v1::DrainWorkerResponse*) override;
  grpc::Status GetMetrics(grpc::ServerContext*, const loom::v1::GetMetricsRequest*,
                          loom::v1::GetMetricsResponse*) override;
  grpc::Status ReadLog(grpc::ServerContext*, const loom::v1::ReadLogRequest*, loom::v1::ReadLogResponse*) override;
  // Admin only; coordinator/token_service.cc.
  grpc::Status IssueToken(grpc::ServerContext*, const loom::v1::IssueTokenRequest*,
                          loom::v1::IssueTokenResponse*) override;
  grpc::Status ListTokens(grpc::ServerContext*, const loom::v1::ListTokensRequest*,
                          loom::v1::ListTokensResponse*) override;
  grpc::Status RevokeToken(grpc::ServerContext*, const loom::v1::RevokeTokenRequest*,
                           loom::v1::RevokeTokenResponse*) override;

 private:
  Coordinator* coordinator_;
  TokenStore* tokens_;
  std::atomic<bool> shutting_down_{false};
};

// Connect uses gRPC's callback API: a worker's messages are handled on the thread that read
// them, with no thread per stream (10,000 workers are 10,000 streams).
class WorkerServiceImpl final
    : public loom::v1::WorkerService::WithCallbackMethod_Connect<loom::v1::WorkerService::Service> {
 public:
  explicit WorkerServiceImpl(Coordinator* coordinator) : coordinator_(coordinator) {}
  grpc::Status GetStorage(grpc::ServerContext*, const loom::v1::GetStorageRequest*,
                          loom::v1::StorageInfo* response) override;
  grpc::ServerBidiReactor<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage>* Connect(
      grpc::CallbackServerContext* context) override;

 private:
  Coordinator* coordinator_;
};

class RendezvousServiceImpl final : public loom::v1::RendezvousService::Service {
 public:
  explicit RendezvousServiceImpl(RendezvousStore* store) : store_(store) {}
  grpc::Status Set(grpc::ServerContext*, const loom::v1::RendezvousSetRequest*,
                   loom::v1::RendezvousSetResponse*) override;
  grpc::Status Get(grpc::ServerContext*, const loom::v1::RendezvousGetRequest*,
                   loom::v1::RendezvousGetResponse*) override;
  grpc::Status Add(grpc::ServerContext*, const loom::v1::RendezvousAddRequest*,
                   loom::v1::RendezvousAddResponse*) override;

 private:
  RendezvousStore* store_;
};

}  // namespace loom::coordinator
