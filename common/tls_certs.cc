#include "common/tls_certs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace loom {
namespace {

// RAII for OpenSSL's objects.
template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Bignum = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using Names = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

// OpenSSL's queued error messages, joined (and cleared).
std::string OpenSslErrors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

absl::Status SslError(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslErrors()));
}

std::string Join(const std::string& dir, const std::string& file) {
  return (std::filesystem::path(dir) / file).string();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Writes `bytes` to a temporary file created with `mode` in the same directory, fsyncs it and
// renames it over `path`: readers see the old file or the new one, never a part.
absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes, mode_t mode) {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  // open() applies the umask; the mode must hold exactly (a key must never be group-readable).
  if (::fchmod(fd, mode) != 0) {
    const absl::Status s = ErrnoError("cannot chmod", tmp);
    ::close(fd);
    return s;
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status s = ErrnoError("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const absl::Status s = ErrnoError("cannot sync", tmp);
    ::unlink(tmp.c_str());
    return s;
  }
  return RenameDurably(tmp, path);
}

absl::StatusOr<std::string> BioText(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  if (n < 0 || data == nullptr) return SslError("cannot read a memory BIO");
  return std::string(data, static_cast<size_t>(n));
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return SslError("cannot encode a private key");
  }
  return BioText(bio.get());
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) return SslError("cannot encode a certificate");
  return BioText(bio.get());
}

absl::StatusOr<Key> NewKey() {
  Key key(EVP_EC_gen("P-256"));
  if (!key) return SslError("cannot generate an EC P-256 key");
  return key;
}

absl::StatusOr<Cert> ParseCert(const std::string& pem, const std::string& what) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Cert cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a PEM certificate (expected -----BEGIN CERTIFICATE-----; make one with "
                           "`loom certs issue`)"));
  }
  return cert;
}

absl::StatusOr<Key> ParseKey(const std::string& pem, const std::string& what) {
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Key key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not an unencrypted PEM private key (make one with `loom certs issue`)"));
  }
  return key;
}

absl::Status AddName(X509_NAME* name, const char* field, const std::string& value) {
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.c_str()),
                                 -1, -1, 0) != 1) {
    return SslError(absl::StrCat("cannot set the subject's ", field));
  }
  return absl::OkStatus();
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return SslError(absl::StrCat("cannot make the extension ", OBJ_nid2sn(nid), "=", value));
  const int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (ok != 1) return SslError(absl::StrCat("cannot add the extension ", OBJ_nid2sn(nid)));
  return absl::OkStatus();
}

// A certificate for `key` with `subject`, valid from an hour ago (clock skew) for `validity`,
// with a random 127-bit serial; issuer and signature are set by the caller.
absl::StatusOr<Cert> NewCert(EVP_PKEY* key, absl::Duration validity) {
  Cert cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) return SslError("cannot make a certificate");
  Bignum serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr) {
    return SslError("cannot make a serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), absl::ToInt64Seconds(validity)) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return SslError("cannot set a certificate's validity or key");
  }
  return cert;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') return false;
  }
  return name != "ca";
}

bool ValidHost(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != ':' && c != '*') {
      return false;
    }
  }
  return true;
}

bool IsIpAddress(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

const std::vector<std::string>& TlsRoles() {
  static const std::vector<std::string> roles = {"admin", "submitter", "viewer", "worker", "rank", "coordinator"};
  return roles;
}

absl::Status InitCertificateAuthority(const std::string& dir, const CaOptions& options) {
  const std::string cert_path = Join(dir, "ca.pem"), key_path = Join(dir, "ca.key");
  if (Exists(key_path) || Exists(cert_path)) {
    return absl::AlreadyExistsError(absl::StrCat(
        dir, " already holds a CA (ca.pem/ca.key); a new one would invalidate every certificate it issued. "
             "Use another --dir, or remove them yourself if that is what you mean"));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  ::chmod(dir.c_str(), 0700);
  LOOM_ASSIGN_OR_RETURN(Key key, NewKey());
  LOOM_ASSIGN_OR_RETURN(Cert cert, NewCert(key.get(), options.validity));
  X509_NAME* name = X509_get_subject_name(cert.get());
  LOOM_RETURN_IF_ERROR(AddName(name, "O", "Loom"));
  LOOM_RETURN_IF_ERROR(AddName(name, "CN", options.common_name));
  if (X509_set_issuer_name(cert.get(), name) != 1) return SslError("cannot set the CA's issuer");
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) return SslError("cannot sign the CA certificate");
  LOOM_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  LOOM_ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));
  LOOM_RETURN_IF_ERROR(WriteFileAtomically(key_path, key_pem, 0600));
  return WriteFileAtomically(cert_path, cert_pem, 0644);
}

absl::Status IssueCertificate(const std::string& dir, const LeafOptions& options) {
  const auto& roles = TlsRoles();
  if (std::find(roles.begin(), roles.end(), options.role) == roles.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--role '", options.role, "' is not one of ", absl::StrJoin(roles, ", ")));
  }
  if (!ValidName(options.name)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--name '", options.name, "' must be 1-64 characters of A-Z a-z 0-9 . _ - (not starting with . or -, not 'ca')"));
  }
  for (const std::string& host : options.hosts) {
    if (!ValidHost(host)) {
      return absl::InvalidArgumentError(absl::StrCat("--host '", host, "' is not a host name or IP address"));
    }
  }
  const std::string cert_path = Join(dir, options.name + ".pem"), key_path = Join(dir, options.name + ".key");
  if (!options.overwrite && (Exists(cert_path) || Exists(key_path))) {
    return absl::AlreadyExistsError(
        absl::StrCat(cert_path, " already exists; pass --force to replace it (renewal)"));
  }
  LOOM_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(Join(dir, "ca.pem")));
  absl::StatusOr<std::string> ca_key_pem = ReadFile(Join(dir, "ca.key"));
  if (!ca_key_pem.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " has no readable ca.key (", ca_key_pem.status().message(),
                     "); issue certificates where the CA was made (`loom certs init --dir DIR`)"));
  }
  LOOM_ASSIGN_OR_RETURN(Cert ca, ParseCert(ca_pem, Join(dir, "ca.pem")));
  LOOM_ASSIGN_OR_RETURN(Key ca_key, ParseKey(*ca_key_pem, Join(dir, "ca.key")));
  if (X509_check_private_key(ca.get(), ca_key.get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(absl::StrCat(dir, ": ca.key does not belong to ca.pem"));
  }

  LOOM_ASSIGN_OR_RETURN(Key key, NewKey());
  LOOM_ASSIGN_OR_RETURN(Cert cert, NewCert(key.get(), options.validity));
  X509_NAME* name = X509_get_subject_name(cert.get());
  LOOM_RETURN_IF_ERROR(AddName(name, "O", "Loom"));
  LOOM_RETURN_IF_ERROR(AddName(name, "OU", options.role));
  LOOM_RETURN_IF_ERROR(AddName(name, "CN", options.name));
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) != 1) {
    return SslError("cannot set the issuer");
  }
  std::vector<std::string> sans = {absl::StrCat("URI:loom://", options.role, "/", options.name)};
  if (options.role == "coordinator") {
    sans.insert(sans.end(), {"DNS:localhost", "IP:127.0.0.1", "IP:::1"});
  }
  for (const std::string& host : options.hosts) {
    sans.push_back(absl::StrCat(IsIpAddress(host) ? "IP:" : "DNS:", host));
  }
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_ext_key_usage, "serverAuth,clientAuth"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_subject_key_identifier, "hash"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always"));
  LOOM_RETURN_IF_ERROR(AddExtension(cert.get(), ca.get(), NID_subject_alt_name, absl::StrJoin(sans, ",")));
  if (X509_sign(cert.get(), ca_key.get(), EVP_sha256()) <= 0) return SslError("cannot sign the certificate");
  LOOM_ASSIGN_OR_RETURN(std::string key_pem, KeyPem(key.get()));
  LOOM_ASSIGN_OR_RETURN(std::string cert_pem, CertPem(cert.get()));
  LOOM_RETURN_IF_ERROR(WriteFileAtomically(key_path, key_pem, 0600));
  return WriteFileAtomically(cert_path, cert_pem, 0644);
}

absl::Status EnsureCertificate(const std::string& dir, const LeafOptions& options) {
  if (!Exists(Join(dir, "ca.pem"))) LOOM_RETURN_IF_ERROR(InitCertificateAuthority(dir));
  if (Exists(Join(dir, options.name + ".pem")) && Exists(Join(dir, options.name + ".key"))) {
    return absl::OkStatus();
  }
  LeafOptions o = options;
  o.overwrite = true;  // one of the pair is missing: make both anew
  return IssueCertificate(dir, o);
}

absl::StatusOr<CertificateInfo> ParseCertificate(const std::string& pem, const std::string& what) {
  LOOM_ASSIGN_OR_RETURN(Cert cert, ParseCert(pem, what));
  CertificateInfo info;
  const auto text = [](X509_NAME* name, int nid) {
    char buf[256] = {};
    const int n = X509_NAME_get_text_by_NID(name, nid, buf, sizeof buf);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  info.common_name = text(X509_get_subject_name(cert.get()), NID_commonName);
  info.organizational_unit = text(X509_get_subject_name(cert.get()), NID_organizationalUnitName);
  info.issuer_common_name = text(X509_get_issuer_name(cert.get()), NID_commonName);
  info.is_ca = X509_check_ca(cert.get()) > 0;
  Names names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
    if (n->type == GEN_URI || n->type == GEN_DNS) {
      const ASN1_IA5STRING* s = n->d.ia5;
      std::string value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
      (n->type == GEN_URI ? info.uris : info.dns_names).push_back(std::move(value));
    } else if (n->type == GEN_IPADD) {
      const int len = ASN1_STRING_length(n->d.ip);
      char buf[INET6_ADDRSTRLEN] = {};
      if ((len == 4 || len == 16) &&
          inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(n->d.ip), buf, sizeof buf) != nullptr) {
        info.ip_addresses.push_back(buf);
      }
    }
  }
  struct tm tm = {};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) == 1) info.not_after = absl::FromTM(tm, absl::UTCTimeZone());
  if (const ASN1_INTEGER* serial = X509_get0_serialNumber(cert.get())) {
    Bignum bn(ASN1_INTEGER_to_BN(serial, nullptr));
    if (bn) {
      char* hex = BN_bn2hex(bn.get());
      if (hex != nullptr) info.serial_hex = hex;
      OPENSSL_free(hex);
    }
  }
  ERR_clear_error();
  return info;
}

absl::StatusOr<CertificateInfo> ReadCertificate(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  return ParseCertificate(pem, path);
}

absl::Status VerifyIssuedBy(const std::string& leaf_pem, const std::string& ca_pem) {
  LOOM_ASSIGN_OR_RETURN(Cert leaf, ParseCert(leaf_pem, "the certificate"));
  LOOM_ASSIGN_OR_RETURN(Cert ca, ParseCert(ca_pem, "the CA certificate"));
  EVP_PKEY* ca_key = X509_get0_pubkey(ca.get());
  const bool ok = ca_key != nullptr && X509_check_issued(ca.get(), leaf.get()) == X509_V_OK &&
                  X509_verify(leaf.get(), ca_key) == 1;
  ERR_clear_error();
  if (!ok) return absl::PermissionDeniedError("the certificate was not issued by this CA");
  return absl::OkStatus();
}

absl::Status CheckKeyMatchesCertificate(const std::string& cert_pem, const std::string& key_pem,
                                        const std::string& what) {
  LOOM_ASSIGN_OR_RETURN(Cert cert, ParseCert(cert_pem, what + ".pem"));
  LOOM_ASSIGN_OR_RETURN(Key key, ParseKey(key_pem, what + ".key"));
  const bool ok = X509_check_private_key(cert.get(), key.get()) == 1;
  ERR_clear_error();
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ".key does not belong to ", what, ".pem (reissue both with `loom certs issue --force`)"));
  }
  return absl::OkStatus();
}

}  // namespace loom
