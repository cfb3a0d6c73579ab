// Mutual TLS for every gRPC channel of Loom, from one TLS directory (common/tls_certs.h):
// ca.pem (the only CA trusted), NAME.pem and NAME.key (this process's identity).
//
// Servers require a client certificate issued by ca.pem and verify it; clients present theirs and
// verify the server's against ca.pem and the address dialled (the server certificate needs a SAN
// for it: `loom certs issue --host`). Both sides read the files through gRPC's
// FileWatcherCertificateProvider, so replacing ca.pem / NAME.pem / NAME.key (each by rename, key
// first) takes effect for new connections within `reload` without a restart.
//
// Without a TLS directory every function here gives insecure credentials: loopback-only
// deployments and old tests keep working, and the coordinator refuses a non-loopback --listen
// without TLS (coordinator/main.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loom {

// The environment variables every binary reads when its flag is not given.
inline constexpr char kTlsDirEnv[] = "LOOM_TLS_DIR";
inline constexpr char kTlsNameEnv[] = "LOOM_TLS_NAME";

struct TlsIdentity {
  std::string dir;
  std::string name;       // NAME of NAME.pem / NAME.key
  std::string ca_path;    // <dir>/ca.pem
  std::string cert_path;  // <dir>/NAME.pem
  std::string key_path;   // <dir>/NAME.key
};

// $LOOM_TLS_DIR / $LOOM_TLS_NAME, or "".
std::string TlsDirFromEnv();
std::string TlsNameFromEnv();

// Finds this process's identity in `dir`: `name` if given; else the first of `preferred` whose
// files exist; else the only NAME.pem (besides ca.pem) with its NAME.key. Checks that the files
// parse, that the key belongs to the certificate, that ca.pem issued it, and that the key is not
// readable by group or others; every error names the file and the fix.
absl::StatusOr<TlsIdentity> FindTlsIdentity(const std::string& dir, const std::string& name,
                                            const std::vector<std::string>& preferred = {});

// FindTlsIdentity in two halves, for a short-lived client (the `loom` command) that would pay
// the second on every run. LocateTlsIdentity finds the files and checks what a stat shows (they
// exist, the key's mode); no certificate or key is parsed. CheckTlsIdentity does the rest (they
// parse, the key matches, ca.pem issued the certificate). Parsing with OpenSSL 3 costs a few ms
// of CPU in a new process, and a bad file fails the TLS handshake anyway: such a client calls
// CheckTlsIdentity only when a call fails, to say why (bench/README.md, section TLS).
absl::StatusOr<TlsIdentity> LocateTlsIdentity(const std::string& dir, const std::string& name,
                                              const std::vector<std::string>& preferred = {});
absl::Status CheckTlsIdentity(const TlsIdentity& identity);

// How often the certificate files are checked for changes (gRPC's file watcher).
inline constexpr absl::Duration kDefaultTlsReload = absl::Seconds(5);

// Server credentials that require and verify a client certificate issued by the CA.
std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsIdentity& identity,
                                                              absl::Duration reload = kDefaultTlsReload);
// The same, but a client may connect without a certificate (one it presents must verify): for the
// coordinator, whose PlanService accepts bearer tokens instead (coordinator/authorization.h). Every
// RPC must then refuse a connection without an identity itself.
std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentialsCertificateOptional(
    const TlsIdentity& identity, absl::Duration reload = kDefaultTlsReload);
// Channel credentials that verify the server against `ca_path` and present no certificate (a
// client that authenticates with a bearer token).
std::shared_ptr<grpc::ChannelCredentials> ChannelTlsCredentialsWithoutCertificate(
    const std::string& ca_path, absl::Duration reload = kDefaultTlsReload);
// Channel credentials that present the identity and verify the server against the CA.
std::shared_ptr<grpc::ChannelCredentials> ChannelTlsCredentials(const TlsIdentity& identity,
                                                                absl::Duration reload = kDefaultTlsReload);

// For a client flag pair (--tls-dir, --tls-name) already defaulted from the environment: insecure
// credentials when `dir` is empty, else FindTlsIdentity + ChannelTlsCredentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const std::string& dir, const std::string& name, const std::vector<std::string>& preferred = {});

// True for an address only this host can reach: 127.0.0.0/8, ::1, localhost (with a port).
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace loom
