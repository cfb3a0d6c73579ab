// PlanService's token RPCs (`loom tokens`): admin only, and only over TLS, where a token means
// something. The token is in the IssueToken answer and nowhere else; the log names only its holder.
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "coordinator/authorization.h"
#include "coordinator/service.h"

namespace loom::coordinator {
namespace {

constexpr char kLog[] = "tokens";

grpc::Status NeedTokens(const TokenStore* tokens, const grpc::ServerContext* context) {
  if (tokens == nullptr || context == nullptr || !CallerOf(*context).tls) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "bearer tokens need a coordinator with TLS (--tls-dir): without it a token would "
                        "cross the network in the clear");
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::Status PlanServiceImpl::IssueToken(grpc::ServerContext* context,
                                         const loom::v1::IssueTokenRequest* request,
                                         loom::v1::IssueTokenResponse* response) {
  Caller caller;
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"admin"}, "IssueToken", &caller); !s.ok()) return s;
  if (grpc::Status s = NeedTokens(tokens_, context); !s.ok()) return s;
  absl::StatusOr<std::string> token =
      tokens_->Issue(request->role(), request->name(), PrincipalOf(caller), absl::ToUnixMillis(absl::Now()),
                     response->mutable_info());
  if (!token.ok()) return ToGrpc(token.status());
  response->set_token(std::move(*token));
  Log(LogLevel::kInfo, kLog, "token '", request->name(), "' (", request->role(), ") issued by ", caller.name);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::ListTokens(grpc::ServerContext* context, const loom::v1::ListTokensRequest*,
                                         loom::v1::ListTokensResponse* response) {
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"admin"}, "ListTokens"); !s.ok()) return s;
  if (grpc::Status s = NeedTokens(tokens_, context); !s.ok()) return s;
  for (loom::v1::TokenInfo& info : tokens_->List()) *response->add_tokens() = std::move(info);
  return grpc::Status::OK;
}

grpc::Status PlanServiceImpl::RevokeToken(grpc::ServerContext* context,
                                          const loom::v1::RevokeTokenRequest* request,
                                          loom::v1::RevokeTokenResponse*) {
  Caller caller;
  if (grpc::Status s = AuthorizeClient(context, tokens_, {"admin"}, "RevokeToken", &caller); !s.ok())
    return s;
  if (grpc::Status s = NeedTokens(tokens_, context); !s.ok()) return s;
  if (absl::Status s = tokens_->Revoke(request->name()); !s.ok()) return ToGrpc(s);
  Log(LogLevel::kInfo, kLog, "token '", request->name(), "' revoked by ", caller.name);
  return grpc::Status::OK;
}

}  // namespace loom::coordinator
