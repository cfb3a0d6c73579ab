#include "coordinator/authorization.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "coordinator/token_store.h"

namespace loom::coordinator {

Caller CallerOf(const grpc::ServerContextBase& context) {
  Caller caller;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return caller;
  // TlsServerCredentials say "tls", SslServerCredentials "ssl"; a verified peer is TLS whatever
  // the property says.
  caller.tls = auth->IsPeerAuthenticated();
  for (const grpc::string_ref& type : auth->FindPropertyValues(GRPC_TRANSPORT_SECURITY_TYPE_PROPERTY_NAME)) {
    const absl::string_view t(type.data(), type.size());
    if (t == GRPC_SSL_TRANSPORT_SECURITY_TYPE || t == GRPC_TLS_TRANSPORT_SECURITY_TYPE) caller.tls = true;
  }
  // TLS without a client certificate (the server requests one but lets token clients in): no
  // identity here; Authorize refuses it, AuthorizeClient looks for a bearer token.
  if (!caller.tls || !auth->IsPeerAuthenticated()) return caller;
  caller.certificate = true;
  for (const grpc::string_ref& uri : auth->FindPropertyValues(GRPC_PEER_URI_PROPERTY_NAME)) {
    const std::string value(uri.data(), uri.size());
    constexpr absl::string_view kScheme = "loom://";
    if (!absl::StartsWith(value, kScheme)) continue;
    const std::string rest = value.substr(kScheme.size());
    const size_t slash = rest.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size()) continue;
    caller.role = rest.substr(0, slash);
    caller.name = rest.substr(slash + 1);
    break;
  }
  if (caller.role.empty()) {
    // A certificate without the URI: subject OU=ROLE, CN=NAME (what `loom certs` writes too).
    for (const grpc::string_ref& subject : auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME)) {
      std::string role, name;
      for (absl::string_view part : absl::StrSplit(absl::string_view(subject.data(), subject.size()), ',')) {
        part = absl::StripAsciiWhitespace(part);
        if (absl::StartsWith(part, "OU=")) role = std::string(part.substr(3));
        if (absl::StartsWith(part, "CN=")) name = std::string(part.substr(3));
      }
      if (!role.empty() && !name.empty()) {
        caller.role = role;
        caller.name = name;
      }
    }
  }
  return caller;
}

grpc::Status Authorize(const grpc::ServerContextBase& context, const std::vector<std::string>& roles,
                       const char* rpc) {
  const Caller caller = CallerOf(context);
  if (!caller.tls) return grpc::Status::OK;
  if (!caller.certificate) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(rpc, ": no client certificate; this call needs one issued by the cluster's CA "
                                          "(`loom certs issue`)"));
  }
  if (caller.role.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        absl::StrCat(rpc, ": the client certificate names no Loom identity (a SAN URI "
                                          "loom://ROLE/NAME); issue it with `loom certs issue`"));
  }
  for (const std::string& role : roles) {
    if (caller.role == role) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat(rpc, " needs role ", absl::StrJoin(roles, " or "), "; the certificate of '",
                                   caller.name, "' has role ", caller.role));
}

grpc::Status AuthorizeWorker(const grpc::ServerContextBase& context, const std::string& worker_id) {
  if (grpc::Status s = Authorize(context, {"worker"}, "WorkerService.Connect"); !s.ok()) return s;
  const Caller caller = CallerOf(context);
  if (caller.tls && caller.name != worker_id) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("worker '", caller.name, "' may register only as itself, not as '", worker_id,
                                     "' (its certificate's name is its --worker-id)"));
  }
  return grpc::Status::OK;
}

grpc::Status Authorize(const grpc::ServerContextBase* context, const std::vector<std::string>& roles, const char* rpc) {
  return context == nullptr ? grpc::Status::OK : Authorize(*context, roles, rpc);
}

grpc::Status AuthorizeWorker(const grpc::ServerContextBase* context, const std::string& worker_id) {
  return context == nullptr ? grpc::Status::OK : AuthorizeWorker(*context, worker_id);
}

namespace {

// The token of an `authorization: Bearer TOKEN` header; "" when there is none. Several
// authorization headers are refused (*several = true) rather than guessed between.
std::string BearerToken(const grpc::ServerContextBase& context, bool* several) {
  std::string token;
  int count = 0;
  const auto range = context.client_metadata().equal_range("authorization");
  for (auto it = range.first; it != range.second; ++it) {
    ++count;
    const absl::string_view value(it->second.data(), it->second.size());
    constexpr absl::string_view kBearer = "Bearer ";
    if (absl::StartsWith(value, kBearer)) token = std::string(value.substr(kBearer.size()));
  }
  *several = count > 1;
  return token;
}

}  // namespace

grpc::Status AuthenticateClient(const grpc::ServerContextBase& context, const TokenStore* tokens,
                                Caller* caller) {
  *caller = CallerOf(context);
  if (!caller->tls) return grpc::Status::OK;  // no TLS: anonymous, as before
  if (caller->certificate) {
    if (caller->role.empty()) {
      return grpc::Status(
          grpc::StatusCode::UNAUTHENTICATED,
          "the client certificate names no Loom identity (a SAN URI loom://ROLE/NAME); issue it "
          "with `loom certs issue`");
    }
    caller->via = "certificate";
    return grpc::Status::OK;
  }
  bool several = false;
  const std::string token = BearerToken(context, &several);
  if (several) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "send one authorization header, not several");
  }
  if (token.empty()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no client certificate and no bearer token: use --tls-dir with a certificate from "
                        "`loom certs issue`, or --token / --token-file / LOOM_TOKEN with one from "
                        "`loom tokens issue`");
  }
  const std::optional<loom::v1::TokenInfo> holder =
      tokens != nullptr ? tokens->Authenticate(token) : std::nullopt;
  if (!holder.has_value()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the bearer token is not valid (unknown or revoked); ask an admin for a new one "
                        "(`loom tokens issue`)");
  }
  caller->role = holder->role();
  caller->name = holder->name();
  caller->via = "token";
  return grpc::Status::OK;
}

grpc::Status AuthorizeClient(const grpc::ServerContextBase* context, const TokenStore* tokens,
                             const std::vector<std::string>& roles, const char* rpc, Caller* caller) {
  Caller local;
  if (caller == nullptr) caller = &local;
  *caller = Caller();
  if (context == nullptr) return grpc::Status::OK;
  if (grpc::Status s = AuthenticateClient(*context, tokens, caller); !s.ok()) {
    return grpc::Status(s.error_code(), absl::StrCat(rpc, ": ", s.error_message()));
  }
  if (!caller->tls) return grpc::Status::OK;
  for (const std::string& role : roles) {
    if (caller->role == role) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                      absl::StrCat(rpc, " needs role ", absl::StrJoin(roles, " or "), "; the ", caller->via,
                                   " of '", caller->name, "' has role ", caller->role));
}

loom::v1::Principal PrincipalOf(const Caller& caller) {
  loom::v1::Principal p;
  if (!caller.tls) return p;
  p.set_role(caller.role);
  p.set_name(caller.name);
  p.set_via(caller.via);
  return p;
}

}  // namespace loom::coordinator
