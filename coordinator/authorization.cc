#include "coordinator/authorization.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace loom::coordinator {

Caller CallerOf(const grpc::ServerContextBase& context) {
  Caller caller;
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return caller;
  caller.tls = true;
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

}  // namespace loom::coordinator
