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
// PlanService callers (AuthorizeClient) may instead send a bearer token (`authorization: Bearer
// TOKEN`, coordinator/token_store.h) over a TLS connection without a client certificate: the TLS
// server requests a certificate but lets such connections in, and every RPC then refuses them
// unless the token is valid. WorkerService and RendezvousService (Authorize) stay certificate-only.
//
// Without TLS (no --tls-dir: a loopback coordinator, or --insecure) there is no identity and
// every call is allowed, as before. Refusals: UNAUTHENTICATED for a certificate without a
// loom:// identity, PERMISSION_DENIED naming the roles needed.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "loom/v1/coordinator.pb.h"

namespace loom::coordinator {

struct Caller {
  bool tls = false;          // the connection is TLS (the server's certificate was verified)
  bool certificate = false;  // ... and the client presented a certificate of the CA, verified
  std::string role, name;
  std::string via;  // AuthorizeClient: "certificate" or "token"
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

class TokenStore;

// PlanService: who the caller is, from its certificate or else its bearer token. UNAUTHENTICATED
// when a TLS connection has neither (or an unknown / revoked token). Without TLS: OK, anonymous.
grpc::Status AuthenticateClient(const grpc::ServerContextBase& context, const TokenStore* tokens, Caller* caller);
// AuthenticateClient, then the role check of Authorize; *caller (may be null) is who called. A
// null context (in process) is trusted like a plain-text caller.
grpc::Status AuthorizeClient(const grpc::ServerContextBase* context, const TokenStore* tokens,
                             const std::vector<std::string>& roles, const char* rpc, Caller* caller = nullptr);
// The caller as recorded in a plan (PlanStatus.submitted_by); empty without TLS.
loom::v1::Principal PrincipalOf(const Caller& caller);

}  // namespace loom::coordinator
