#include "common/tls_certs.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include <gtest/gtest.h>

#include "common/files.h"

namespace loom {
namespace {

std::string TempDir() {
  std::string dir = (std::filesystem::temp_directory_path() / "loom-certs-XXXXXX").string();
  return mkdtemp(dir.data());
}

int Mode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

bool Contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(TlsCerts, InitMakesACaWithAPrivateKeyOnlyTheOwnerReads) {
  const std::string dir = TempDir() + "/ca";
  ASSERT_TRUE(InitCertificateAuthority(dir).ok());
  EXPECT_EQ(Mode(dir + "/ca.key"), 0600);
  EXPECT_EQ(Mode(dir), 0700);
  absl::StatusOr<CertificateInfo> ca = ReadCertificate(dir + "/ca.pem");
  ASSERT_TRUE(ca.ok()) << ca.status();
  EXPECT_TRUE(ca->is_ca);
  EXPECT_EQ(ca->common_name, "Loom CA");
  EXPECT_GT(ca->not_after, absl::Now() + absl::Hours(24 * 365));
  // A second init would silently orphan every certificate of the first CA.
  absl::Status again = InitCertificateAuthority(dir);
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  std::filesystem::remove_all(std::filesystem::path(dir).parent_path());
}

TEST(TlsCerts, IssuedLeafCarriesRoleAndNameAndServerNamesAndVerifiesWithItsCaOnly) {
  const std::string root = TempDir();
  const std::string dir = root + "/a", other = root + "/b";
  ASSERT_TRUE(InitCertificateAuthority(dir).ok());
  ASSERT_TRUE(InitCertificateAuthority(other).ok());
  ASSERT_TRUE(IssueCertificate(dir, {.role = "coordinator", .name = "head", .hosts = {"10.0.0.1", "head.cluster"}}).ok());
  EXPECT_EQ(Mode(dir + "/head.key"), 0600);
  absl::StatusOr<CertificateInfo> leaf = ReadCertificate(dir + "/head.pem");
  ASSERT_TRUE(leaf.ok()) << leaf.status();
  EXPECT_FALSE(leaf->is_ca);
  EXPECT_EQ(leaf->common_name, "head");
  EXPECT_EQ(leaf->organizational_unit, "coordinator");
  EXPECT_EQ(leaf->issuer_common_name, "Loom CA");
  EXPECT_TRUE(Contains(leaf->uris, "loom://coordinator/head"));
  EXPECT_TRUE(Contains(leaf->dns_names, "localhost"));
  EXPECT_TRUE(Contains(leaf->dns_names, "head.cluster"));
  EXPECT_TRUE(Contains(leaf->ip_addresses, "127.0.0.1"));
  EXPECT_TRUE(Contains(leaf->ip_addresses, "10.0.0.1"));
  EXPECT_FALSE(leaf->serial_hex.empty());

  const std::string leaf_pem = *ReadFile(dir + "/head.pem");
  EXPECT_TRUE(VerifyIssuedBy(leaf_pem, *ReadFile(dir + "/ca.pem")).ok());
  EXPECT_EQ(VerifyIssuedBy(leaf_pem, *ReadFile(other + "/ca.pem")).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(CheckKeyMatchesCertificate(leaf_pem, *ReadFile(dir + "/head.key"), dir + "/head").ok());

  // A client role gets no loopback server names unless asked.
  ASSERT_TRUE(IssueCertificate(dir, {.role = "viewer", .name = "alice"}).ok());
  absl::StatusOr<CertificateInfo> alice = ReadCertificate(dir + "/alice.pem");
  ASSERT_TRUE(alice.ok());
  EXPECT_TRUE(alice->dns_names.empty());
  EXPECT_TRUE(alice->ip_addresses.empty());
  EXPECT_EQ(alice->uris, std::vector<std::string>{"loom://viewer/alice"});
  EXPECT_FALSE(CheckKeyMatchesCertificate(leaf_pem, *ReadFile(dir + "/alice.key"), dir + "/head").ok());
  std::filesystem::remove_all(root);
}

TEST(TlsCerts, IssueRefusesBadRolesNamesAndOverwritesUnlessForced) {
  const std::string dir = TempDir();
  EXPECT_EQ(IssueCertificate(dir, {.role = "worker", .name = "w1"}).code(), absl::StatusCode::kNotFound)
      << "no CA yet";
  ASSERT_TRUE(InitCertificateAuthority(dir + "/ca").ok());
  const std::string ca = dir + "/ca";
  absl::Status bad_role = IssueCertificate(ca, {.role = "root", .name = "w1"});
  EXPECT_EQ(bad_role.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_role.message().find("submitter"), std::string::npos) << bad_role;
  for (const std::string& name : std::vector<std::string>{"", "../etc/x", "a/b", "ca", ".hidden", std::string(65, 'x')}) {
    EXPECT_EQ(IssueCertificate(ca, {.role = "worker", .name = name}).code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
  EXPECT_EQ(IssueCertificate(ca, {.role = "worker", .name = "w1", .hosts = {"a b"}}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(IssueCertificate(ca, {.role = "worker", .name = "w1"}).ok());
  const std::string serial = ReadCertificate(ca + "/w1.pem")->serial_hex;
  EXPECT_EQ(IssueCertificate(ca, {.role = "worker", .name = "w1"}).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(IssueCertificate(ca, {.role = "worker", .name = "w1", .overwrite = true}).ok());
  EXPECT_NE(ReadCertificate(ca + "/w1.pem")->serial_hex, serial);
  // Ensure keeps what exists and makes what is missing (the CA too).
  ASSERT_TRUE(EnsureCertificate(ca, {.role = "worker", .name = "w1"}).ok());
  const std::string kept = ReadCertificate(ca + "/w1.pem")->serial_hex;
  ASSERT_TRUE(EnsureCertificate(ca, {.role = "worker", .name = "w1"}).ok());
  EXPECT_EQ(ReadCertificate(ca + "/w1.pem")->serial_hex, kept);
  ASSERT_TRUE(EnsureCertificate(dir + "/fresh", {.role = "admin", .name = "admin"}).ok());
  EXPECT_TRUE(ReadCertificate(dir + "/fresh/ca.pem")->is_ca);
  std::filesystem::remove_all(dir);
}

TEST(TlsCerts, GarbageIsRefusedNamingTheFile) {
  absl::StatusOr<CertificateInfo> bad = ParseCertificate("not a certificate", "/x/ca.pem");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("/x/ca.pem"), std::string::npos);
}

}  // namespace
}  // namespace loom
