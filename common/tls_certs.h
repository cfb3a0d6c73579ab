// Loom's own small certificate authority (OpenSSL's libcrypto): what `loom certs init|issue` and
// `loom up` use to make the files every Loom process reads with --tls-dir (common/tls.h).
//
// A TLS directory holds
//   ca.pem            the CA certificate (every process trusts exactly this CA)
//   ca.key            the CA's private key (only where certificates are issued; mode 0600)
//   NAME.pem/NAME.key one leaf per identity (key mode 0600)
// Keys are EC P-256. A leaf names its identity twice, so that authorization can read either:
// subject CN=NAME, OU=ROLE, O=Loom, and a SAN URI loom://ROLE/NAME. Every leaf may act as client
// and server (extended key usage serverAuth + clientAuth); leaves of role "coordinator" carry the
// SANs DNS:localhost and IP:127.0.0.1, ::1, and every leaf the --host names given.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loom {

// The roles a certificate can carry: viewer, submitter, admin, worker, rank (what each may call:
// coordinator/authorization.h), and coordinator (the server's own identity).
const std::vector<std::string>& TlsRoles();

struct CaOptions {
  std::string common_name = "Loom CA";
  absl::Duration validity = absl::Hours(24 * 3650);
};

// Creates DIR (mode 0700) if needed and writes ca.pem and ca.key there. Refuses
// (ALREADY_EXISTS) when DIR already holds ca.key or ca.pem: a second CA would silently invalidate
// every certificate issued by the first.
absl::Status InitCertificateAuthority(const std::string& dir, const CaOptions& options = {});

struct LeafOptions {
  std::string role;                // one of TlsRoles()
  std::string name;                // [A-Za-z0-9._-], 1..64 chars: the file name and the identity
  std::vector<std::string> hosts;  // extra SANs: IP addresses become IP:, anything else DNS:
  absl::Duration validity = absl::Hours(24 * 825);
  bool overwrite = false;          // replace an existing NAME.pem/NAME.key (renewal)
};

// Issues NAME.pem / NAME.key in DIR, signed by DIR's ca.pem/ca.key. The key is written first and
// each file is replaced by rename, so a process watching the files never reads half a file.
absl::Status IssueCertificate(const std::string& dir, const LeafOptions& options);

// Issues the leaf unless DIR already has NAME.pem and NAME.key; creates the CA first if DIR has
// none. What `loom up` does on every start.
absl::Status EnsureCertificate(const std::string& dir, const LeafOptions& options);

// What a certificate says, for tests, `loom certs` output and (later) authorization.
struct CertificateInfo {
  std::string common_name;
  std::string organizational_unit;  // the role
  std::string issuer_common_name;
  std::vector<std::string> uris;    // SAN URIs, e.g. loom://worker/w1
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // textual, e.g. 127.0.0.1
  bool is_ca = false;
  absl::Time not_after;
  std::string serial_hex;
};

// Parses the first certificate of a PEM text; `what` names it in errors (a file path).
absl::StatusOr<CertificateInfo> ParseCertificate(const std::string& pem, const std::string& what);
absl::StatusOr<CertificateInfo> ReadCertificate(const std::string& path);

// OK when `leaf_pem`'s signature verifies with `ca_pem`'s key and its issuer is that CA's subject;
// PERMISSION_DENIED otherwise.
absl::Status VerifyIssuedBy(const std::string& leaf_pem, const std::string& ca_pem);

// OK when the private key in `key_pem` belongs to the certificate in `cert_pem`.
absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& key_pem,
                                        const std::string& what);

}  // namespace loom
