// Who submitted a plan, who may cancel it, and bearer tokens for the CLI, with a real TLS
// coordinator (no workers: plans stay pending, which is all these checks need) and the real
// `loom` client: the owner is shown by `loom status` and survives a restart, a submitter cancels
// only its own plans, tokens work like certificates for the plan API and nowhere else, and the
// coordinator's RocksDB store never holds a token.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/directory_bytes.h"
#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Writes `token` to a 0600 file and returns its path.
std::string TokenFile(const std::string& dir, const std::string& name, const std::string& token) {
  const std::string path = dir + "/" + name + ".token";
  std::ofstream(path) << token << "\n";
  ::chmod(path.c_str(), 0600);
  return path;
}

// TLS that verifies the coordinator and presents no client certificate, with `token` (if any) as
// `authorization: Bearer`.
std::shared_ptr<grpc::Channel> CertlessChannel(const std::string& address, const std::string& ca_pem,
                                               const std::string& token) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ca_pem;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(options);
  if (!token.empty()) {
    credentials = grpc::CompositeChannelCredentials(credentials, grpc::AccessTokenCredentials(token));
  }
  return grpc::CreateChannel(address, credentials);
}

grpc::Status ListPlans(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  loom::v1::ListPlansResponse response;
  return loom::v1::PlanService::NewStub(channel)->ListPlans(&context, loom::v1::ListPlansRequest(),
                                                            &response);
}

grpc::Status GetStorage(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  loom::v1::StorageInfo response;
  return loom::v1::WorkerService::NewStub(channel)->GetStorage(&context, loom::v1::GetStorageRequest(),
                                                               &response);
}

// Stops the coordinator (SIGTERM) and starts it again on the same store; returns once it answers
// (its log still holds the first start's line).
void RestartCoordinator(Cluster& cluster) {
  cluster.KillCoordinator(SIGTERM);
  cluster.StartCoordinator();
  const std::string ca_pem = ReadAll(cluster.tls_dir() + "/ca.pem");
  for (int i = 0; i < 100; ++i) {
    if (ListPlans(CertlessChannel(cluster.address(), ca_pem, "")).error_code() !=
        grpc::StatusCode::UNAVAILABLE)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "the coordinator did not come back:\n" << cluster.coordinator()->log();
}

TEST(PlanOwners, ASubmitterCancelsOnlyItsOwnPlansAndTheOwnerSurvivesARestart) {
  Cluster cluster({.tls = true});
  cluster.StartCoordinator();
  for (const char* name : {"alice", "bob"}) {
    cluster.Certs({"issue", "--dir", cluster.tls_dir(), "--role", "submitter", "--name", name});
  }
  const std::string plan = SourcePath("tests/integration/two_stage_plan.yaml");

  cluster.SetClientTls(cluster.tls_dir(), "alice");
  const std::string alices = cluster.Submit(plan);
  const std::string alices_second = cluster.Submit(plan);
  cluster.SetClientTls(cluster.tls_dir(), "bob");
  const std::string bobs = cluster.Submit(plan);
  ASSERT_FALSE(alices.empty());
  ASSERT_FALSE(bobs.empty());

  CommandResult status = cluster.Loom({"status", alices});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("submitted by alice (submitter)"), std::string::npos) << status.out;
  loom::v1::PlanStatus s;
  ASSERT_TRUE(cluster.Status(bobs, &s));
  EXPECT_EQ(s.submitted_by().name(), "bob");
  EXPECT_EQ(s.submitted_by().role(), "submitter");
  EXPECT_EQ(s.submitted_by().via(), "certificate");

  // bob may not cancel alice's plan; the refusal names the owner and who may.
  CommandResult refused = cluster.Loom({"cancel", alices});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(
      refused.err.find("plan " + alices + " was submitted by alice; only alice or an admin may cancel it"),
      std::string::npos)
      << refused.err;
  ASSERT_TRUE(cluster.Status(alices, &s));
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_ACTIVE);

  // alice cancels her own; an admin cancels bob's.
  cluster.SetClientTls(cluster.tls_dir(), "alice");
  EXPECT_EQ(cluster.Loom({"cancel", alices}).exit_code, 0);
  ASSERT_TRUE(cluster.Status(alices, &s));
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_CANCELLED);
  cluster.SetClientTls(cluster.tls_dir(), "admin");
  EXPECT_EQ(cluster.Loom({"cancel", bobs}).exit_code, 0);
  ASSERT_TRUE(cluster.Status(bobs, &s));
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_CANCELLED);

  // After a restart the owners are still known, and still enforced.
  RestartCoordinator(cluster);
  status = cluster.Loom({"status", alices_second});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("submitted by alice (submitter)"), std::string::npos) << status.out;
  CommandResult all = cluster.Loom({"status", "--json"});
  EXPECT_NE(all.out.find("\"submitted_by\""), std::string::npos) << all.out;
  cluster.SetClientTls(cluster.tls_dir(), "bob");
  refused = cluster.Loom({"cancel", alices_second});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("was submitted by alice"), std::string::npos) << refused.err;
}

TEST(PlanOwners, BearerTokensStandInForCertificatesOnThePlanApiOnly) {
  Cluster cluster({.tls = true});
  cluster.StartCoordinator();
  const std::string plan = SourcePath("tests/integration/two_stage_plan.yaml");
  // A client directory with the CA's certificate and nothing else.
  const std::string ca_only = cluster.dir() + "/ca-only";
  std::filesystem::create_directories(ca_only);
  std::filesystem::copy_file(cluster.tls_dir() + "/ca.pem", ca_only + "/ca.pem");
  const std::string ca_pem = ReadAll(ca_only + "/ca.pem");

  // The admin (certificate) issues a viewer and a submitter token; each is printed once.
  CommandResult issued = cluster.Loom({"tokens", "issue", "--role", "viewer", "--name", "vera"});
  ASSERT_EQ(issued.exit_code, 0) << issued.err;
  const std::string vera = Trim(issued.out);
  ASSERT_EQ(vera.size(), 69u) << vera;
  issued = cluster.Loom({"tokens", "issue", "--role", "submitter", "--name", "sid"});
  ASSERT_EQ(issued.exit_code, 0) << issued.err;
  const std::string sid = Trim(issued.out);
  CommandResult worker_token = cluster.Loom({"tokens", "issue", "--role", "worker", "--name", "w1"});
  EXPECT_EQ(worker_token.exit_code, 1);
  EXPECT_NE(worker_token.err.find("viewer, submitter or admin"), std::string::npos) << worker_token.err;
  CommandResult list = cluster.Loom({"tokens", "list"});
  EXPECT_NE(list.out.find("vera"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("submitter"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find(vera), std::string::npos) << list.out;

  // The viewer's token lists but cannot submit.
  cluster.SetClientTls(ca_only);
  const std::string vera_file = TokenFile(cluster.dir(), "vera", vera);
  CommandResult viewer_list = cluster.Loom({"status", "--token-file", vera_file});
  EXPECT_EQ(viewer_list.exit_code, 0) << viewer_list.err;
  CommandResult viewer_submit = cluster.Loom({"submit", plan, "--token-file", vera_file});
  EXPECT_EQ(viewer_submit.exit_code, 1);
  EXPECT_NE(
      viewer_submit.err.find("SubmitPlan needs role submitter or admin; the token of 'vera' has role viewer"),
      std::string::npos)
      << viewer_submit.err;
  // Only an admin manages tokens.
  CommandResult viewer_issue =
      cluster.Loom({"tokens", "issue", "--role", "admin", "--name", "x", "--token-file", vera_file});
  EXPECT_EQ(viewer_issue.exit_code, 1);
  EXPECT_NE(viewer_issue.err.find("IssueToken needs role admin"), std::string::npos) << viewer_issue.err;

  // The submitter's token submits; the plan records the token's holder, who may cancel it.
  const std::string sid_file = TokenFile(cluster.dir(), "sid", sid);
  CommandResult submitted = cluster.Loom({"submit", plan, "--quiet", "--token-file", sid_file});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  const std::string sids = Trim(submitted.out);
  CommandResult status = cluster.Loom({"status", sids, "--token-file", vera_file});
  EXPECT_NE(status.out.find("submitted by sid (submitter)"), std::string::npos) << status.out;
  EXPECT_EQ(cluster.Loom({"cancel", sids, "--token-file", sid_file}).exit_code, 0);

  // A made-up token and a revoked one: UNAUTHENTICATED.
  const std::string bogus = "loom_" + std::string(64, 'a');
  EXPECT_EQ(ListPlans(CertlessChannel(cluster.address(), ca_pem, bogus)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  CommandResult bogus_status = cluster.Loom({"status", "--token", bogus});
  EXPECT_EQ(bogus_status.exit_code, 1);
  EXPECT_NE(bogus_status.err.find("not valid"), std::string::npos) << bogus_status.err;
  EXPECT_TRUE(ListPlans(CertlessChannel(cluster.address(), ca_pem, vera)).ok());
  cluster.SetClientTls(cluster.tls_dir(), "admin");
  EXPECT_EQ(cluster.Loom({"tokens", "revoke", "vera"}).exit_code, 0);
  const grpc::Status revoked = ListPlans(CertlessChannel(cluster.address(), ca_pem, vera));
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::UNAUTHENTICATED) << revoked.error_message();

  // Neither certificate nor token: refused by the plan API and the worker API alike; a token
  // opens nothing but the plan API.
  const grpc::Status anonymous = ListPlans(CertlessChannel(cluster.address(), ca_pem, ""));
  EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << anonymous.error_message();
  EXPECT_NE(anonymous.error_message().find("no client certificate and no bearer token"), std::string::npos);
  EXPECT_EQ(GetStorage(CertlessChannel(cluster.address(), ca_pem, "")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  issued = cluster.Loom({"tokens", "issue", "--role", "admin", "--name", "root2"});
  ASSERT_EQ(issued.exit_code, 0) << issued.err;
  const std::string admin_token = Trim(issued.out);
  EXPECT_TRUE(ListPlans(CertlessChannel(cluster.address(), ca_pem, admin_token)).ok());
  EXPECT_EQ(GetStorage(CertlessChannel(cluster.address(), ca_pem, admin_token)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Without TLS the client refuses to send a token at all.
  cluster.SetClientTls("");
  CommandResult plain = cluster.Loom({"status", "--token", admin_token});
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_NE(plain.err.find("a bearer token needs TLS"), std::string::npos) << plain.err;

  // Tokens survive a restart (sid's still works, vera's stays revoked), and the store's files
  // never held a token.
  RestartCoordinator(cluster);
  EXPECT_TRUE(ListPlans(CertlessChannel(cluster.address(), ca_pem, sid)).ok());
  EXPECT_EQ(ListPlans(CertlessChannel(cluster.address(), ca_pem, vera)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  cluster.KillCoordinator(SIGTERM);
  const std::string bytes = AllBytesUnder(cluster.data_dir());
  ASSERT_FALSE(bytes.empty());
  for (const std::string& token : {vera, sid, admin_token}) {
    EXPECT_EQ(bytes.find(token.substr(5)), std::string::npos) << "the store holds a token";
  }
}

}  // namespace
}  // namespace loom::testing
