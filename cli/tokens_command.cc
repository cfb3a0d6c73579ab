// `loom tokens issue|list|revoke`: bearer tokens for people who use the CLI without a client
// certificate. Admin-only RPCs on the coordinator (coordinator/token_store.h), which keeps only
// each token's SHA-256; the token is printed once, by `issue`.
#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "common/command_line.h"

namespace loom::cli {
namespace {

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: loom tokens issue|list|revoke [flags]\n\n"
               "Bearer tokens: an alternative to a client certificate for the plan API (submit, status,\n"
               "cancel, ...), given to `loom` with --token-file, LOOM_TOKEN or --token, over TLS only\n"
               "(--tls-dir with the cluster's ca.pem). Workers and ranks always use certificates.\n"
               "Every command here needs the admin role.\n\n"
               "  issue   make a token for --name with --role; printed once, the coordinator keeps its hash\n"
               "  list    the tokens: name, role, when and by whom issued (never the tokens)\n"
               "  revoke  end a token: the next call with it is refused\n\n"
               "Run `loom tokens COMMAND --help` for its flags. See docs/operations.md, section Security.\n");
}

std::string Time(int64_t ms) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

int Issue(const Args& args) {
  std::string role, name;
  CommandLine cl(
      "loom tokens issue",
      "Makes a bearer token for NAME with ROLE and prints it on stdout, once: the coordinator keeps "
      "only its SHA-256. Store it in a file of mode 0600 and pass --token-file FILE (or set "
      "LOOM_TOKEN). One token per name; revoke it to issue another.");
  cl.AddFlag("role", &role, "viewer, submitter or admin (required)");
  cl.AddFlag("name", &name,
             "who holds it (required; letters, digits, '.', '_', '-'); plans it submits show it");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddEpilog(
      "example:\n  loom tokens issue --role submitter --name alice > alice.token && chmod 600 alice.token");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (role.empty() || name.empty()) {
    std::fprintf(stderr, "loom tokens issue: --role and --name are required (see --help)\n");
    return 2;
  }
  Client client;
  if (!ConnectOrReport("tokens issue", target, &client)) return 2;
  loom::v1::IssueTokenRequest request;
  request.set_role(role);
  request.set_name(name);
  loom::v1::IssueTokenResponse response;
  grpc::Status status = client.stub->IssueToken(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("tokens issue", client, status);
  std::printf("%s\n", response.token().c_str());
  std::fprintf(stderr, "issued a %s token for %s; it is shown only now\n", role.c_str(), name.c_str());
  return 0;
}

int List(const Args& args) {
  bool json = false;
  CommandLine cl("loom tokens list",
                 "Lists the bearer tokens: name, role, creation time, issuer (not the tokens).");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("json", &json, "print loom.v1.ListTokensResponse as JSON");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  Client client;
  if (!ConnectOrReport("tokens list", target, &client)) return 2;
  loom::v1::ListTokensResponse response;
  grpc::Status status =
      client.stub->ListTokens(CallContext().get(), loom::v1::ListTokensRequest(), &response);
  if (!status.ok()) return ReportRpcError("tokens list", client, status);
  if (json) {
    std::printf("%s\n", ToJson(response).c_str());
  } else if (response.tokens_size() == 0) {
    std::printf("no tokens\n");
  } else {
    std::printf("%-20s %-10s %-24s %s\n", "NAME", "ROLE", "CREATED", "ISSUED BY");
    for (const loom::v1::TokenInfo& t : response.tokens()) {
      std::printf("%-20s %-10s %-24s %s\n", t.name().c_str(), t.role().c_str(), Time(t.created_ms()).c_str(),
                  t.issued_by().name().c_str());
    }
  }
  return 0;
}

int Revoke(const Args& args) {
  std::string name;
  CommandLine cl("loom tokens revoke", "Revokes NAME's bearer token: the next call that uses it is refused.");
  cl.AddPositional("NAME", &name, "the token's name (loom tokens list)");
  Target target;
  AddTargetFlags(cl, &target);
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  Client client;
  if (!ConnectOrReport("tokens revoke", target, &client)) return 2;
  loom::v1::RevokeTokenRequest request;
  request.set_name(name);
  loom::v1::RevokeTokenResponse response;
  grpc::Status status = client.stub->RevokeToken(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("tokens revoke " + name, client, status);
  std::printf("revoked the token of %s\n", name.c_str());
  return 0;
}

}  // namespace

int RunTokens(const Args& args) {
  if (args.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "issue") return Issue(rest);
  if (args[0] == "list") return List(rest);
  if (args[0] == "revoke") return Revoke(rest);
  if (args[0] == "--help" || args[0] == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  std::fprintf(stderr, "loom tokens: unknown command '%s'\n", args[0].c_str());
  PrintUsage(stderr);
  return 2;
}

}  // namespace loom::cli
