#include "common/tls.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/tls_certs.h"

namespace loom {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

bool IsFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The NAMEs with both NAME.pem and NAME.key in `dir`, sorted.
std::vector<std::string> Leaves(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::filesystem::path p = entry.path();
    if (p.extension() != ".pem" || p.stem() == "ca") continue;
    if (IsFile((p.parent_path() / (p.stem().string() + ".key")).string())) out.push_back(p.stem().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> Provider(const TlsIdentity& id,
                                                                             absl::Duration reload) {
  const unsigned seconds = static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(reload)));
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(id.key_path, id.cert_path,
                                                                              id.ca_path, seconds);
}

}  // namespace

std::string TlsDirFromEnv() { return Env(kTlsDirEnv); }
std::string TlsNameFromEnv() { return Env(kTlsNameEnv); }

absl::StatusOr<TlsIdentity> LocateTlsIdentity(const std::string& dir, const std::string& name,
                                              const std::vector<std::string>& preferred) {
  TlsIdentity id;
  id.dir = dir;
  id.ca_path = (std::filesystem::path(dir) / "ca.pem").string();
  if (!std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat("TLS directory ", dir,
                                            " does not exist (make one with `loom certs init --dir DIR` and "
                                            "`loom certs issue`)"));
  }
  if (!IsFile(id.ca_path)) {
    return absl::NotFoundError(
        absl::StrCat("TLS directory ", dir, " has no ca.pem (copy it from where `loom certs init` made it)"));
  }
  if (!name.empty()) {
    id.name = name;
  } else {
    for (const std::string& p : preferred) {
      if (IsFile((std::filesystem::path(dir) / (p + ".pem")).string())) {
        id.name = p;
        break;
      }
    }
    if (id.name.empty()) {
      const std::vector<std::string> leaves = Leaves(dir);
      if (leaves.size() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TLS directory ", dir, leaves.empty() ? " holds no NAME.pem with its NAME.key" : " holds several identities (",
            absl::StrJoin(leaves, ", "), leaves.empty() ? "" : ")",
            "; choose one with --tls-name NAME or LOOM_TLS_NAME (issue one with `loom certs issue`)"));
      }
      id.name = leaves[0];
    }
  }
  id.cert_path = (std::filesystem::path(dir) / (id.name + ".pem")).string();
  id.key_path = (std::filesystem::path(dir) / (id.name + ".key")).string();
  // Readable (what gRPC will read; cheap next to parsing them).
  if (absl::StatusOr<std::string> ca = ReadFile(id.ca_path); !ca.ok()) return ca.status();
  if (absl::StatusOr<std::string> cert = ReadFile(id.cert_path); !cert.ok()) {
    return absl::NotFoundError(absl::StrCat("TLS identity '", id.name, "': ", cert.status().message(),
                                            " (issue it with `loom certs issue --name ", id.name, "`)"));
  }
  if (absl::StatusOr<std::string> key = ReadFile(id.key_path); !key.ok()) return key.status();
  struct stat st;
  if (::stat(id.key_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(id.key_path, " is readable by group or others (mode ",
                                                    absl::StrFormat("%04o", st.st_mode & 07777),
                                                    "); run chmod 600 ", id.key_path));
  }
  return id;
}

absl::Status CheckTlsIdentity(const TlsIdentity& id) {
  LOOM_ASSIGN_OR_RETURN(std::string ca, ReadFile(id.ca_path));
  LOOM_ASSIGN_OR_RETURN(std::string cert, ReadFile(id.cert_path));
  LOOM_ASSIGN_OR_RETURN(std::string key, ReadFile(id.key_path));
  LOOM_ASSIGN_OR_RETURN(CertificateInfo ca_info, ParseCertificate(ca, id.ca_path));
  if (!ca_info.is_ca) return absl::InvalidArgumentError(absl::StrCat(id.ca_path, " is not a CA certificate"));
  LOOM_RETURN_IF_ERROR(CheckKeyMatchesCertificate(cert, key, (std::filesystem::path(id.dir) / id.name).string()));
  if (absl::Status s = VerifyIssuedBy(cert, ca); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(id.cert_path, " was not issued by ", id.ca_path,
                                                   " (every process must use certificates of one CA)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsIdentity> FindTlsIdentity(const std::string& dir, const std::string& name,
                                            const std::vector<std::string>& preferred) {
  LOOM_ASSIGN_OR_RETURN(TlsIdentity id, LocateTlsIdentity(dir, name, preferred));
  LOOM_RETURN_IF_ERROR(CheckTlsIdentity(id));
  return id;
}

std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsIdentity& identity, absl::Duration reload) {
  grpc::experimental::TlsServerCredentialsOptions options(Provider(identity, reload));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentialsCertificateOptional(const TlsIdentity& identity,
                                                                                 absl::Duration reload) {
  grpc::experimental::TlsServerCredentialsOptions options(Provider(identity, reload));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // A certificate that is presented must still verify against the CA (else the handshake fails).
  options.set_cert_request_type(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  return grpc::experimental::TlsServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelTlsCredentialsWithoutCertificate(const std::string& ca_path,
                                                                                  absl::Duration reload) {
  const unsigned seconds = static_cast<unsigned>(std::max<int64_t>(1, absl::ToInt64Seconds(reload)));
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(ca_path, seconds));
  options.watch_root_certs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelTlsCredentials(const TlsIdentity& identity, absl::Duration reload) {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(Provider(identity, reload));
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& dir, const std::string& name, const std::vector<std::string>& preferred) {
  if (dir.empty()) return grpc::InsecureChannelCredentials();
  LOOM_ASSIGN_OR_RETURN(TlsIdentity id, FindTlsIdentity(dir, name, preferred));
  return ChannelTlsCredentials(id);
}

bool IsLoopbackAddress(const std::string& host_port) {
  std::string host = host_port;
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') == std::string::npos ? std::string::npos : host.find(']') - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));
  }
  if (absl::StartsWith(host, "ipv4:")) host = host.substr(5);
  in_addr v4;
  return host == "localhost" || host == "::1" ||
         (inet_pton(AF_INET, host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127);
}

}  // namespace loom
