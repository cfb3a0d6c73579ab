// Mutual TLS with real processes: a coordinator, worker daemons and ranks that all use
// --tls-dir (common/tls.h), the `loom` client with and without the right certificate, and the
// coordinator's refusal to listen beyond loopback without TLS.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <string>

#include <gtest/gtest.h>

#include "tests/grpc_health_check.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// grpc.health.v1.Health/Check over `credentials`: the call's status.
grpc::Status HealthCheck(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return loom::testing::CheckHealth(address, std::move(credentials), std::chrono::seconds(3)).status;
}

TEST(TlsCluster, OnlyClientsAndWorkersWithACertificateOfTheClustersCaGetIn) {
  Cluster cluster({.tls = true});
  cluster.StartCoordinator();
  EXPECT_NE(cluster.coordinator()->log().find("with mutual TLS"), std::string::npos) << cluster.Logs();
  cluster.StartWorker("w1", 2);

  // The right certificate: a plan runs on the TLS worker.
  const std::string id = cluster.Submit(SourcePath("tests/integration/two_stage_plan.yaml"));
  ASSERT_EQ(id, "twostage-1");
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();

  // No TLS at all: the handshake fails, and the client says how to use TLS.
  cluster.SetClientTls("");
  CommandResult plain = cluster.Loom({"status"});
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_NE(plain.err.find("cannot reach the coordinator"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("--tls-dir"), std::string::npos) << plain.err;

  // A certificate of another CA (same names, same roles): refused.
  const std::string other = cluster.dir() + "/other";
  cluster.Certs({"init", "--dir", other});
  cluster.Certs({"issue", "--dir", other, "--role", "admin", "--name", "admin"});
  cluster.Certs({"issue", "--dir", other, "--role", "worker", "--name", "w2"});
  cluster.SetClientTls(other);
  CommandResult foreign = cluster.Loom({"status"});
  EXPECT_EQ(foreign.exit_code, 1);
  EXPECT_EQ(foreign.out.find(id), std::string::npos) << foreign.out;

  // The cluster's CA, but a key that does not belong to the certificate: `loom` did not parse
  // them before dialling (cli/client.cc); when the call fails it says what is wrong.
  const std::string mismatched = cluster.dir() + "/mismatched";
  std::filesystem::create_directories(mismatched);
  std::filesystem::copy_file(cluster.tls_dir() + "/ca.pem", mismatched + "/ca.pem");
  std::filesystem::copy_file(cluster.tls_dir() + "/admin.pem", mismatched + "/admin.pem");
  std::filesystem::copy_file(other + "/admin.key", mismatched + "/admin.key");
  cluster.SetClientTls(mismatched);
  CommandResult mismatch = cluster.Loom({"status"});
  EXPECT_EQ(mismatch.exit_code, 1);
  EXPECT_NE(mismatch.err.find("the client certificate cannot work"), std::string::npos) << mismatch.err;
  EXPECT_NE(mismatch.err.find("does not belong"), std::string::npos) << mismatch.err;

  // TLS that trusts the coordinator but presents no client certificate: the handshake lets it in
  // (for bearer-token clients, tests/integration/plan_owners_test.cc), the read-only health check
  // answers, and every Loom RPC refuses it (plan_owners_test.cc checks that too).
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = ReadAll(cluster.tls_dir() + "/ca.pem");
  EXPECT_TRUE(HealthCheck(cluster.address(), grpc::SslCredentials(no_cert)).ok());
  // A certificate of another CA: refused in the handshake.
  no_cert.pem_private_key = ReadAll(other + "/admin.key");
  no_cert.pem_cert_chain = ReadAll(other + "/admin.pem");
  EXPECT_EQ(HealthCheck(cluster.address(), grpc::SslCredentials(no_cert)).error_code(), grpc::StatusCode::UNAVAILABLE);

  // A worker with a certificate of another CA never registers.
  Process intruder({WorkerBinary(), "--coordinator", cluster.address(), "--devices", "cpu:1", "--work-dir",
                    cluster.dir() + "/w2", "--worker-id", "w2", "--metrics-listen", "127.0.0.1:0", "--tls-dir", other,
                    "--tls-name", "w2", "--rank-binary", FakeRankBinary()},
                   cluster.dir() + "/w2.log");
  EXPECT_FALSE(intruder.WaitForLog("no coordinator at").empty()) << intruder.log();
  cluster.SetClientTls(cluster.tls_dir());
  CommandResult workers = cluster.Loom({"workers"});
  EXPECT_EQ(workers.exit_code, 0) << workers.err;
  EXPECT_NE(workers.out.find("w1"), std::string::npos) << workers.out;
  EXPECT_EQ(workers.out.find("w2"), std::string::npos) << workers.out;
}

// Roles come from the certificate (OU / loom://ROLE/NAME): a viewer reads but cannot submit, a
// submitter cannot drain, and a worker registers only under its own name.
TEST(TlsCluster, EveryRpcChecksTheRoleInTheCallersCertificate) {
  Cluster cluster({.tls = true});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  cluster.Certs({"issue", "--dir", cluster.tls_dir(), "--role", "viewer", "--name", "vic"});
  cluster.Certs({"issue", "--dir", cluster.tls_dir(), "--role", "submitter", "--name", "sam"});
  const std::string plan = SourcePath("tests/integration/two_stage_plan.yaml");

  cluster.SetClientTls(cluster.tls_dir(), "vic");
  CommandResult viewer_submit = cluster.Loom({"submit", plan});
  EXPECT_EQ(viewer_submit.exit_code, 1);
  EXPECT_NE(viewer_submit.err.find("SubmitPlan needs role submitter or admin; the certificate of 'vic' has role viewer"),
            std::string::npos)
      << viewer_submit.err;
  EXPECT_EQ(cluster.Loom({"workers"}).exit_code, 0);

  cluster.SetClientTls(cluster.tls_dir(), "sam");
  const std::string id = cluster.Submit(plan);
  EXPECT_EQ(id, "twostage-1");
  CommandResult submitter_drain = cluster.Loom({"workers", "drain", "w1"});
  EXPECT_EQ(submitter_drain.exit_code, 1);
  EXPECT_NE(submitter_drain.err.find("DrainWorker needs role admin"), std::string::npos) << submitter_drain.err;

  cluster.SetClientTls(cluster.tls_dir(), "vic");
  const PlanStatus s = cluster.WaitForPlan(id, Ended);  // a viewer may watch it
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();

  // w1's certificate used to register as w9, and a viewer's certificate as a worker.
  Process impostor({WorkerBinary(), "--coordinator", cluster.address(), "--devices", "cpu:1", "--work-dir",
                    cluster.dir() + "/w9", "--worker-id", "w9", "--metrics-listen", "127.0.0.1:0", "--tls-dir",
                    cluster.tls_dir(), "--tls-name", "w1", "--rank-binary", FakeRankBinary()},
                   cluster.dir() + "/w9.log");
  EXPECT_FALSE(impostor.WaitForLog("may register only as itself, not as 'w9'").empty()) << impostor.log();
  Process viewer_worker({WorkerBinary(), "--coordinator", cluster.address(), "--devices", "cpu:1", "--work-dir",
                         cluster.dir() + "/vic", "--worker-id", "vic", "--metrics-listen", "127.0.0.1:0", "--tls-dir",
                         cluster.tls_dir(), "--tls-name", "vic", "--rank-binary", FakeRankBinary()},
                        cluster.dir() + "/vic.log");
  EXPECT_FALSE(viewer_worker.WaitForLog("GetStorage needs role worker").empty()) << viewer_worker.log();
  CommandResult workers = cluster.Loom({"workers"});
  EXPECT_EQ(workers.out.find("w9"), std::string::npos) << workers.out;
  EXPECT_EQ(workers.out.find("vic"), std::string::npos) << workers.out;
}

// Real ranks (loom-rank, dp 2 on two workers) meet through the coordinator's rendezvous and
// confirm their write lease there at every checkpoint: over TLS with their worker's certificate,
// since the coordinator serves nothing else.
TEST(TlsCluster, RanksOfTlsWorkersTrainThroughTheRendezvousOverTls) {
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = PreparedData(), .tls = true});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string plan = cluster.dir() + "/plan.yaml";
  std::ofstream(plan) << R"(name: tiny
model: {layers: 1, d_model: 32, heads: 2, kv_heads: 1, ffn_size: 64, vocab_size: 512}
stages:
  - name: core
    kind: pretrain
    tokens: 10240
    parallel: {dp: 2, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 10, keep_last: 0}
)";
  const std::string id = cluster.Submit(plan);
  ASSERT_EQ(id, "tiny-1");
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).attempt(), 1) << s.DebugString();
  EXPECT_EQ(s.jobs(0).last_checkpoint().step(), 20) << s.DebugString();
  EXPECT_NE(cluster.worker("w1")->log().find("(mutual TLS)"), std::string::npos) << cluster.Logs();
}

TEST(TlsCluster, ACoordinatorRefusesANonLoopbackListenWithoutTlsUnlessInsecure) {
  Cluster cluster;
  const std::vector<std::string> base = {CoordinatorBinary(), "--listen", "0.0.0.0:0", "--advertise", "127.0.0.1:1",
                                         "--data-dir", cluster.data_dir(), "--metrics-listen", "127.0.0.1:0"};
  Process refused(base, cluster.dir() + "/refused.log");
  int status = -1;
  for (int i = 0; i < 100 && waitpid(refused.pid(), &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(WIFEXITED(status)) << refused.log();
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string message = refused.log();
  EXPECT_NE(message.find("refusing to listen on 0.0.0.0:0 without TLS"), std::string::npos) << message;
  EXPECT_NE(message.find("--tls-dir"), std::string::npos) << message;
  EXPECT_NE(message.find("--insecure"), std::string::npos) << message;

  std::vector<std::string> insecure = base;
  insecure.push_back("--insecure");
  Process allowed(insecure, cluster.dir() + "/insecure.log");
  EXPECT_FALSE(allowed.WaitForLog("listening on").empty()) << allowed.log();

  cluster.Certs({"init", "--dir", cluster.dir() + "/tls"});
  cluster.Certs({"issue", "--dir", cluster.dir() + "/tls", "--role", "coordinator", "--name", "coordinator"});
  std::vector<std::string> secure = base;
  secure[6] = cluster.dir() + "/secure";
  secure.insert(secure.end(), {"--tls-dir", cluster.dir() + "/tls"});
  Process with_tls(secure, cluster.dir() + "/secure.log");
  EXPECT_FALSE(with_tls.WaitForLog("listening on 0.0.0.0:[0-9]+ with mutual TLS").empty()) << with_tls.log();
}

}  // namespace
}  // namespace loom::testing
