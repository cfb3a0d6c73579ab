// What the client commands share: the coordinator address (--coordinator, LOOM_COORDINATOR, or
// 127.0.0.1:7070), a stub with a deadline on every call, clear messages when the coordinator is
// unreachable, JSON output, and human-readable progress lines.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/command_line.h"
#include "common/tls.h"
#include "google/protobuf/message.h"
#include "loom/v1/coordinator.grpc.pb.h"

namespace loom::cli {

inline constexpr char kDefaultCoordinator[] = "127.0.0.1:7070";

// LOOM_COORDINATOR, or the default.
std::string DefaultCoordinatorAddress();

struct Client {
  std::string address;
  bool tls = false;
  // The client certificate presented, if any. Connect only locates it (LocateTlsIdentity); when a
  // call cannot get through, ReportRpcError checks it (CheckTlsIdentity) to say what is wrong.
  std::optional<TlsIdentity> identity;
  std::unique_ptr<loom::v1::PlanService::Stub> stub;
};

// Where and how to reach the coordinator: --coordinator, --tls-dir, --tls-name (each defaulted from
// LOOM_COORDINATOR, LOOM_TLS_DIR, LOOM_TLS_NAME), and --token / --token-file (LOOM_TOKEN).
struct Target {
  std::string address;
  std::string tls_dir;   // empty: no TLS
  std::string tls_name;  // empty: "admin" if the directory has it, else its only certificate
  // A bearer token (`loom tokens issue`) instead of a client certificate: --token, else the
  // contents of --token-file, else LOOM_TOKEN. Needs tls_dir for ca.pem; no certificate is sent.
  std::string token;
  std::string token_file;
};
// Adds --coordinator, --tls-dir, --tls-name, --token and --token-file to `cl`, defaulted from the
// environment.
void AddTargetFlags(CommandLine& cl, Target* target);
// Connects to `target` into `client`, or prints "loom COMMAND: why" to stderr; false then (exit 2).
bool ConnectOrReport(const std::string& command, const Target& target, Client* client);

// A stub on a channel with the target's credentials; an unusable TLS directory is an error that
// names the file and the fix.
absl::StatusOr<Client> Connect(const Target& target);

// A context whose deadline is `seconds` from now.
std::unique_ptr<grpc::ClientContext> CallContext(double seconds = 10);

// Prints "loom: <what>: ..." to stderr: for UNAVAILABLE / DEADLINE_EXCEEDED a message naming the
// address and how to choose another (and what is wrong with the client certificate, if anything
// is); otherwise the server's message. Returns 1.
int ReportRpcError(const std::string& what, const Client& client, const grpc::Status& status);

// Proto -> JSON with the .proto field names, indented.
std::string ToJson(const google::protobuf::Message& message);

// "core  RUNNING  attempt 1  step 120  tokens 1.2M/4M (30%)  loss 3.2100  12.3K tok/s  ETA 4m10s"
std::string JobLine(const loom::v1::JobStatus& job, size_t name_width);
// "goodput 81.2% of 6m40s; largest losses: recovery 32s, wasted progress 20s, failure detection 9s"
// (all the plan's jobs together; coordinator/goodput.h); empty before anything is accounted.
std::string GoodputLine(const loom::v1::PlanStatus& plan);
// "RUNNING" for JOB_STATE_RUNNING, "SUCCEEDED" for PLAN_STATE_SUCCEEDED.
std::string StateName(loom::v1::JobState state);
std::string StateName(loom::v1::PlanState state);

}  // namespace loom::cli
