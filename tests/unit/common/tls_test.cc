// Mutual TLS between a real gRPC server and real channels in this process (common/tls.h): who is
// let in, and certificates replaced on disk taking effect without a restart.
#include "common/tls.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "common/files.h"
#include "common/tls_certs.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/grpc_health_check.h"

namespace loom {
namespace {

std::string TempDir() {
  std::string dir = (std::filesystem::temp_directory_path() / "loom-tls-XXXXXX").string();
  return mkdtemp(dir.data());
}

// grpc.health.v1.Health/Check over `credentials`: the call's status.
grpc::Status HealthCheck(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return loom::testing::CheckHealth(address, std::move(credentials), std::chrono::seconds(3)).status;
}

// A server with gRPC health on 127.0.0.1 with the identity `name` of `dir`.
struct Server {
  Server(const std::string& dir, const std::string& name, absl::Duration reload = absl::Seconds(1)) {
    grpc::EnableDefaultHealthCheckService(true);
    absl::StatusOr<TlsIdentity> id = FindTlsIdentity(dir, name);
    EXPECT_TRUE(id.ok()) << id.status();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ServerTlsCredentials(*id, reload), &port);
    // Any synchronous service makes it a synchronous server, which then serves health too.
    builder.RegisterService(&unimplemented);
    server = builder.BuildAndStart();
    address = "127.0.0.1:" + std::to_string(port);
  }
  ~Server() { server->Shutdown(std::chrono::system_clock::now()); }
  loom::v1::RendezvousService::Service unimplemented;
  int port = 0;
  std::string address;
  std::unique_ptr<grpc::Server> server;
};

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = TempDir();
    dir_ = root_ + "/tls";
    other_ = root_ + "/other";
    ASSERT_TRUE(InitCertificateAuthority(dir_).ok());
    ASSERT_TRUE(IssueCertificate(dir_, {.role = "coordinator", .name = "coordinator"}).ok());
    ASSERT_TRUE(IssueCertificate(dir_, {.role = "admin", .name = "admin"}).ok());
    ASSERT_TRUE(InitCertificateAuthority(other_).ok());
    ASSERT_TRUE(IssueCertificate(other_, {.role = "admin", .name = "admin"}).ok());
    ASSERT_TRUE(IssueCertificate(other_, {.role = "coordinator", .name = "coordinator"}).ok());
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::shared_ptr<grpc::ChannelCredentials> Client(const std::string& dir, const std::string& name) {
    absl::StatusOr<TlsIdentity> id = FindTlsIdentity(dir, name);
    EXPECT_TRUE(id.ok()) << id.status();
    return ChannelTlsCredentials(*id, absl::Seconds(1));
  }
  std::string root_, dir_, other_;
};

TEST_F(TlsTest, OnlyAClientWithACertificateOfTheSameCaIsServed) {
  Server server(dir_, "coordinator");
  ASSERT_NE(server.port, 0);
  const grpc::Status ok = HealthCheck(server.address, Client(dir_, "admin"));
  EXPECT_TRUE(ok.ok()) << ok.error_message();

  // No TLS at all, TLS without a client certificate, a certificate of another CA: refused in
  // the handshake.
  EXPECT_EQ(HealthCheck(server.address, grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = *ReadFile(dir_ + "/ca.pem");
  EXPECT_EQ(HealthCheck(server.address, grpc::SslCredentials(no_cert)).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::SslCredentialsOptions foreign;
  foreign.pem_root_certs = *ReadFile(dir_ + "/ca.pem");
  foreign.pem_private_key = *ReadFile(other_ + "/admin.key");
  foreign.pem_cert_chain = *ReadFile(other_ + "/admin.pem");
  EXPECT_EQ(HealthCheck(server.address, grpc::SslCredentials(foreign)).error_code(), grpc::StatusCode::UNAVAILABLE);
  // And a client of the other CA does not trust this server either.
  EXPECT_EQ(HealthCheck(server.address, Client(other_, "admin")).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, ReplacedCertificatesAreUsedForNewConnectionsWithoutARestart) {
  Server server(dir_, "coordinator", absl::Seconds(1));
  ASSERT_TRUE(HealthCheck(server.address, Client(dir_, "admin")).ok());
  ASSERT_FALSE(HealthCheck(server.address, Client(other_, "admin")).ok());
  std::filesystem::copy(dir_, root_ + "/old");
  // Move the server to the other CA: key first, then certificate, then CA, each by rename.
  for (const std::string file : {"coordinator.key", "coordinator.pem", "ca.pem"}) {
    ASSERT_TRUE(WriteFileDurably(dir_ + "/" + file + ".new", *ReadFile(other_ + "/" + file)).ok());
    ::chmod((dir_ + "/" + file + ".new").c_str(), 0600);
    ASSERT_TRUE(RenameDurably(dir_ + "/" + file + ".new", dir_ + "/" + file).ok());
  }
  bool switched = false;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
       !switched && std::chrono::steady_clock::now() < until;) {
    switched = HealthCheck(server.address, Client(other_, "admin")).ok();
    if (!switched) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(switched) << "the server did not pick up its new certificate within 10 s";
  // The old CA's clients are refused now.
  EXPECT_FALSE(HealthCheck(server.address, Client(root_ + "/old", "admin")).ok());
}

TEST_F(TlsTest, FindIdentityChoosesByNamePreferenceOrTheOnlyLeafAndExplainsFailures) {
  absl::StatusOr<TlsIdentity> id = FindTlsIdentity(dir_, "", {"nobody", "admin"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->name, "admin");
  EXPECT_EQ(id->key_path, dir_ + "/admin.key");
  absl::StatusOr<TlsIdentity> ambiguous = FindTlsIdentity(dir_, "");
  EXPECT_FALSE(ambiguous.ok());
  EXPECT_NE(ambiguous.status().message().find("--tls-name"), std::string::npos) << ambiguous.status();
  EXPECT_NE(ambiguous.status().message().find("admin, coordinator"), std::string::npos) << ambiguous.status();

  const std::string single = root_ + "/single";
  std::filesystem::create_directories(single);
  std::filesystem::copy_file(dir_ + "/ca.pem", single + "/ca.pem");
  std::filesystem::copy_file(dir_ + "/admin.pem", single + "/alice.pem");
  std::filesystem::copy_file(dir_ + "/admin.key", single + "/alice.key");
  id = FindTlsIdentity(single, "");
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->name, "alice");

  ::chmod((single + "/alice.key").c_str(), 0644);
  absl::StatusOr<TlsIdentity> open_key = FindTlsIdentity(single, "alice");
  EXPECT_EQ(open_key.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(open_key.status().message().find("chmod 600"), std::string::npos) << open_key.status();
  ::chmod((single + "/alice.key").c_str(), 0600);

  // A leaf of another CA beside this CA, a key of another leaf, a missing directory.
  std::filesystem::copy_file(other_ + "/admin.pem", single + "/alice.pem",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_FALSE(FindTlsIdentity(single, "alice").ok());
  std::filesystem::copy_file(dir_ + "/coordinator.pem", single + "/alice.pem",
                             std::filesystem::copy_options::overwrite_existing);
  absl::StatusOr<TlsIdentity> mismatch = FindTlsIdentity(single, "alice");
  EXPECT_NE(mismatch.status().message().find("does not belong"), std::string::npos) << mismatch.status();
  EXPECT_EQ(FindTlsIdentity(root_ + "/none", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FindTlsIdentity(dir_, "bob").status().code(), absl::StatusCode::kNotFound);
}

// The `loom` command only locates its identity (LocateTlsIdentity) and parses it only when a call
// fails (CheckTlsIdentity): a located identity that is bad must still never get a connection, and
// the check must then name what is wrong.
TEST_F(TlsTest, LocateLeavesTheCertificatesUnparsedAndABadOneFailsTheHandshakeAndTheCheck) {
  Server server(dir_, "coordinator");
  ASSERT_NE(server.port, 0);
  absl::StatusOr<TlsIdentity> good = LocateTlsIdentity(dir_, "", {"admin"});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(CheckTlsIdentity(*good).ok());
  EXPECT_TRUE(HealthCheck(server.address, ChannelTlsCredentials(*good)).ok());

  const std::string bad = root_ + "/bad";
  std::filesystem::create_directories(bad);
  std::filesystem::copy_file(dir_ + "/ca.pem", bad + "/ca.pem");
  std::filesystem::copy_file(dir_ + "/admin.pem", bad + "/admin.pem");
  std::filesystem::copy_file(dir_ + "/coordinator.key", bad + "/admin.key");  // another leaf's key
  ::chmod((bad + "/admin.key").c_str(), 0600);
  absl::StatusOr<TlsIdentity> mismatch = LocateTlsIdentity(bad, "admin");
  ASSERT_TRUE(mismatch.ok()) << mismatch.status();
  EXPECT_FALSE(HealthCheck(server.address, ChannelTlsCredentials(*mismatch)).ok());
  const absl::Status why = CheckTlsIdentity(*mismatch);
  EXPECT_NE(why.message().find("does not belong"), std::string::npos) << why;

  // A leaf of another CA beside this CA: located, refused, explained.
  std::filesystem::copy_file(other_ + "/admin.pem", bad + "/admin.pem", std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(other_ + "/admin.key", bad + "/admin.key", std::filesystem::copy_options::overwrite_existing);
  absl::StatusOr<TlsIdentity> foreign = LocateTlsIdentity(bad, "admin");
  ASSERT_TRUE(foreign.ok()) << foreign.status();
  EXPECT_FALSE(HealthCheck(server.address, ChannelTlsCredentials(*foreign)).ok());
  EXPECT_NE(CheckTlsIdentity(*foreign).message().find("was not issued by"), std::string::npos);

  // What a stat shows is still checked up front: the key's mode, missing files.
  ::chmod((bad + "/admin.key").c_str(), 0644);
  EXPECT_EQ(LocateTlsIdentity(bad, "admin").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(LocateTlsIdentity(bad, "bob").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LocateTlsIdentity(root_ + "/none", "").status().code(), absl::StatusCode::kNotFound);
}

TEST(TlsAddress, LoopbackAddressesAreTold) {
  for (const char* a : {"127.0.0.1:7070", "127.1.2.3:0", "localhost:7070", "[::1]:7070"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:7070", "10.0.0.1:7070", ":7070", "[::]:7070", "head:7070", "127.0.0.1.evil.com:1", "127.1.evil:1"}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace loom
