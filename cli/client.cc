#include "cli/client.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/proto_names.h"
#include "common/tls.h"
#include "common/units.h"
#include "google/protobuf/util/json_util.h"

namespace loom::cli {
namespace {

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrCat(s / 60, "m", absl::StrFormat("%02d", s % 60), "s");
  return absl::StrCat(s / 3600, "h", absl::StrFormat("%02d", (s % 3600) / 60), "m");
}

std::string Short(double n) {
  if (n >= 1e9) return absl::StrFormat("%.1fB", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.1fM", n / 1e6);
  if (n >= 1e3) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrFormat("%.0f", n);
}

}  // namespace

std::string DefaultCoordinatorAddress() {
  const char* env = std::getenv("LOOM_COORDINATOR");
  return env != nullptr && *env != '\0' ? env : kDefaultCoordinator;
}

void AddTargetFlags(CommandLine& cl, Target* target) {
  target->address = DefaultCoordinatorAddress();
  target->tls_dir = TlsDirFromEnv();
  target->tls_name = TlsNameFromEnv();
  cl.AddFlag("coordinator", &target->address,
             "coordinator address (host:port); default $LOOM_COORDINATOR or 127.0.0.1:7070");
  cl.AddFlag("tls-dir", &target->tls_dir,
             "mutual TLS: directory with ca.pem and this client's NAME.pem/NAME.key (default $LOOM_TLS_DIR; "
             "empty: no TLS, loopback coordinators only)");
  cl.AddFlag("tls-name", &target->tls_name,
             "which NAME in --tls-dir (default $LOOM_TLS_NAME, else admin if present, else the only one)");
  if (const char* env = std::getenv("LOOM_TOKEN"); env != nullptr) target->token = env;
  cl.AddFlag("token", &target->token,
             "bearer token from `loom tokens issue`, instead of a client certificate (default $LOOM_TOKEN; "
             "prefer --token-file or LOOM_TOKEN, a flag shows in ps). Needs --tls-dir with the CA's ca.pem");
  cl.AddFlag("token-file", &target->token_file,
             "read the bearer token from this file (mode 0600; whitespace around it ignored)");
}

namespace {

// The token of --token-file (or --token / LOOM_TOKEN); "" when none is given.
absl::StatusOr<std::string> TargetToken(const Target& target) {
  std::string token = target.token;
  if (!target.token_file.empty()) {
    struct stat st;
    if (::stat(target.token_file.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("--token-file ", target.token_file, ": cannot read it"));
    }
    if ((st.st_mode & 077) != 0) {
      return absl::PermissionDeniedError(absl::StrCat("--token-file ", target.token_file,
                                                      " is readable by group or others; run chmod 600 ",
                                                      target.token_file));
    }
    std::ifstream in(target.token_file);
    std::stringstream contents;
    contents << in.rdbuf();
    if (!in) return absl::NotFoundError(absl::StrCat("--token-file ", target.token_file, ": cannot read it"));
    token = contents.str();
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  for (char c : token) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) {
      return absl::InvalidArgumentError(
          "the bearer token has characters a token never has (check --token / "
          "--token-file / LOOM_TOKEN)");
    }
  }
  return token;
}

}  // namespace

absl::StatusOr<Client> Connect(const Target& target) {
  absl::StatusOr<std::string> token = TargetToken(target);
  if (!token.ok()) return token.status();
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials;
  std::optional<TlsIdentity> identity;
  if (!token->empty()) {
    // A token travels only over TLS that verified the coordinator: gRPC sends call credentials
    // on secure channels only, and without --tls-dir there is no CA to verify against.
    if (target.tls_dir.empty()) {
      return absl::InvalidArgumentError(
          "a bearer token needs TLS: pass --tls-dir DIR (or LOOM_TLS_DIR) with the cluster's ca.pem, so that "
          "the "
          "token goes only to the real coordinator");
    }
    const std::string ca = (std::filesystem::path(target.tls_dir) / "ca.pem").string();
    if (!std::filesystem::is_regular_file(ca)) {
      return absl::NotFoundError(absl::StrCat(
          "--tls-dir ", target.tls_dir, " has no ca.pem (a token client needs only the cluster's ca.pem)"));
    }
    credentials = grpc::CompositeChannelCredentials(ChannelTlsCredentialsWithoutCertificate(ca),
                                                    grpc::AccessTokenCredentials(*token));
  } else if (!target.tls_dir.empty()) {
    // Only located, not parsed: a bad certificate fails the handshake, and ReportRpcError then
    // says what is wrong with it. Parsing first would cost every run a few ms (bench/tls).
    absl::StatusOr<TlsIdentity> id = LocateTlsIdentity(target.tls_dir, target.tls_name, {"admin"});
    if (!id.ok()) return id.status();
    identity = *id;
    credentials = ChannelTlsCredentials(*id);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (!credentials.ok()) return credentials.status();
  Client c;
  c.address = target.address;
  c.tls = !target.tls_dir.empty();
  c.identity = std::move(identity);
  c.stub = loom::v1::PlanService::NewStub(grpc::CreateChannel(target.address, *credentials));
  return c;
}

std::unique_ptr<grpc::ClientContext> CallContext(double seconds) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return context;
}

int ReportRpcError(const std::string& what, const Client& client, const grpc::Status& status) {
  const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  // Connect did not parse the client certificate (LocateTlsIdentity); now that no call got
  // through, a bad one is the likeliest cause, and the message should say so first.
  if (absl::Status unusable = unreachable && client.identity ? CheckTlsIdentity(*client.identity) : absl::OkStatus();
      !unusable.ok()) {
    std::fprintf(stderr, "loom: %s: the client certificate cannot work: %s\n  (the call to %s failed: %s)\n",
                 what.c_str(), std::string(unusable.message()).c_str(), client.address.c_str(),
                 status.error_message().c_str());
  } else if (unreachable) {
    std::fprintf(
        stderr,
        "loom: %s: cannot reach the coordinator at %s (%s)\n"
        "  is loom-coordinator (or `loom up`) running there? choose another with --coordinator HOST:PORT "
        "or LOOM_COORDINATOR\n",
        what.c_str(), client.address.c_str(), status.error_message().c_str());
    if (!client.tls) {
      std::fprintf(stderr, "  if it uses mutual TLS, pass --tls-dir DIR (or set LOOM_TLS_DIR)\n");
    } else {
      std::fprintf(stderr,
                   "  with TLS, a refused handshake looks like this too: the coordinator's certificate must be of "
                   "the CA in --tls-dir and name the address dialled (loom certs issue --host)\n");
    }
  } else {
    std::string message = status.error_message();
    if (!message.empty() && message.back() == '\n') message.pop_back();
    std::fprintf(stderr, "loom: %s: %s\n", what.c_str(), message.c_str());
  }
  return 1;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string StateName(loom::v1::JobState state) { return Upper(EnumName(state)); }
std::string StateName(loom::v1::PlanState state) { return Upper(EnumName(state)); }

// Connects to `target` into `client`, or prints why not; false then (exit 2).
bool ConnectOrReport(const std::string& command, const Target& target, Client* client) {
  absl::StatusOr<Client> c = Connect(target);
  if (!c.ok()) {
    std::fprintf(stderr, "loom %s: %s\n", command.c_str(), std::string(c.status().message()).c_str());
    return false;
  }
  *client = std::move(*c);
  return true;
}

std::string GoodputLine(const loom::v1::PlanStatus& plan) {
  std::map<std::string, double> seconds;
  double wall = 0, uncommitted = 0;
  for (const loom::v1::JobStatus& job : plan.jobs()) {
    for (const auto& [bucket, s] : job.goodput().seconds()) seconds[bucket] += s;
    wall += job.goodput().wall_seconds();
    uncommitted += job.goodput().uncommitted_seconds();
  }
  if (wall <= 0) return "";
  std::string line = absl::StrFormat("goodput %.1f%% of %s", 100 * seconds["productive"] / wall, Duration(wall));
  if (uncommitted >= 0.5) absl::StrAppend(&line, " (", Duration(uncommitted), " of steps not yet checkpointed)");
  // The badput, largest first: what the time went to besides productive steps.
  std::vector<std::pair<double, std::string>> losses;
  for (const auto& [bucket, s] : seconds) {
    if (bucket != "productive" && s >= 0.5) losses.push_back({s, bucket});
  }
  std::sort(losses.rbegin(), losses.rend());
  if (losses.size() > 3) losses.resize(3);
  std::vector<std::string> parts;
  for (const auto& [s, bucket] : losses) parts.push_back(absl::StrCat(absl::StrReplaceAll(bucket, {{"_", " "}}), " ", Duration(s)));
  if (!parts.empty()) absl::StrAppend(&line, "; largest losses: ", absl::StrJoin(parts, ", "));
  return line;
}

std::string JobLine(const loom::v1::JobStatus& job, size_t name_width) {
  std::string line =
      absl::StrFormat("%-*s %-10s", static_cast<int>(name_width), job.stage(), StateName(job.state()));
  if (job.attempt() > 0) absl::StrAppend(&line, absl::StrFormat(" attempt %d", job.attempt()));
  const loom::v1::Progress& p = job.progress();
  const bool active =
      job.state() == loom::v1::JOB_STATE_RUNNING || job.state() == loom::v1::JOB_STATE_SCHEDULED;
  if (p.step() > 0 || job.tokens_budget() > 0) {
    absl::StrAppend(&line, absl::StrFormat("  step %d", p.step()));
    if (job.tokens_budget() > 0) {
      const double pct = 100.0 * static_cast<double>(p.tokens()) / static_cast<double>(job.tokens_budget());
      absl::StrAppend(&line,
                      absl::StrFormat("  tokens %s/%s (%.0f%%)", Short(static_cast<double>(p.tokens())),
                                      Short(static_cast<double>(job.tokens_budget())), pct));
    }
    if (p.step() > 0) absl::StrAppend(&line, absl::StrFormat("  loss %.4f", p.loss()));
    if (active && p.tokens_per_second() > 0) {
      absl::StrAppend(&line, absl::StrFormat("  %s tok/s", Short(p.tokens_per_second())));
      if (p.model_flops_utilization() > 0) {
        absl::StrAppend(&line, absl::StrFormat(" (MFU %.1f%%)", 100.0 * p.model_flops_utilization()));
      }
      if (job.tokens_budget() > p.tokens()) {
        absl::StrAppend(
            &line, "  ETA ",
            Duration(static_cast<double>(job.tokens_budget() - p.tokens()) / p.tokens_per_second()));
      }
    }
  }
  // The latest evaluation: held-out losses (not the "/before" baselines of context extension)
  // and accuracies, sorted by set.
  std::vector<std::string> evals;
  for (const auto& [set, loss] : std::map<std::string, double>(job.eval_loss().begin(), job.eval_loss().end())) {
    if (!absl::EndsWith(set, "/before")) evals.push_back(absl::StrFormat("%s %.3f", set, loss));
  }
  for (const auto& [key, value] :
       std::map<std::string, double>(job.eval_metrics().begin(), job.eval_metrics().end())) {
    if (absl::EndsWith(key, "/accuracy")) {
      evals.push_back(absl::StrFormat("%s accuracy %.1f%%", key.substr(0, key.size() - 9), 100 * value));
    }
  }
  if (!evals.empty()) absl::StrAppend(&line, "  eval ", absl::StrJoin(evals, ", "));
  if (!job.reason().empty() && job.state() != loom::v1::JOB_STATE_RUNNING)
    absl::StrAppend(&line, "  (", job.reason(), ")");
  if (job.checkpoint_save_failures() > 0) {
    absl::StrAppend(&line, "  ", job.checkpoint_save_failures(), " checkpoint save(s) failed, last at ",
                    job.last_checkpoint_save_error());
  }
  if (!job.warning().empty()) absl::StrAppend(&line, "  WARNING: ", job.warning());
  if (job.stragglers_size() > 0) {
    std::vector<std::string> slow;
    for (const loom::v1::Straggler& s : job.stragglers()) {
      slow.push_back(absl::StrFormat("rank %d on %s (%.3f s compute/step vs peers %.3f s)", s.rank(), s.worker_id(),
                                     s.compute_seconds(), s.peers_compute_seconds()));
    }
    absl::StrAppend(&line, "  STRAGGLERS: ", absl::StrJoin(slow, ", "));
  }
  return line;
}

}  // namespace loom::cli
