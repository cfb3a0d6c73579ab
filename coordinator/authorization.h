// Who is calling, and may they: the role and name in the caller's client certificate (the SAN URI
// loom://ROLE/NAME that `loom certs issue` writes, common/tls_certs.h), checked by every RPC of
// coordinator/service.cc.
//
//   viewer     GetPlan, ListPlans, WatchPlan, ListWorkers, ListCheckpoints
//   submitter  what a viewer may, and SubmitPlan, CancelPlan
//   admin      everything on PlanService (DrainWorker only for admin)
//   worker     WorkerService (GetStorage, Connect), registering only under its own name as worker id;
//              RendezvousService (its ranks use its certificate)
//   rank       RendezvousService
//
// Without TLS (no --tls-dir: a loopback coordinator, or --insecure) there is no identity and
// every call is allowed, as before. Refusals: UNAUTHENTICATED for a certificate without a
// loom:// identity, PERMISSION_DENIED naming the roles needed.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

namespace loom::coordinator {

struct Caller {
  bool tls = false;  // the connection is authenticated (TLS with a verified client certificate)
  std::string role, name;
};

Caller CallerOf(const grpc::ServerContextBase& context);

// OK when the caller's role is one of `roles` (or the connection has no TLS).
grpc::Status Authorize(const grpc::ServerContextBase& context, const std::vector<std::string>& roles,
                       const char* rpc);

// Authorize for role worker, and the certificate's name must be `worker_id`.
grpc::Status AuthorizeWorker(const grpc::ServerContextBase& context, const std::string& worker_id);
// The same for a call that may come in process, without a gRPC context (null: tests, embedding):
// such a caller is trusted like a plain-text one.
grpc::Status Authorize(const grpc::ServerContextBase* context, const std::vector<std::string>& roles, const char* rpc);
grpc::Status AuthorizeWorker(const grpc::ServerContextBase* context, const std::string& worker_id);

}  // namespace loom::coordinator
