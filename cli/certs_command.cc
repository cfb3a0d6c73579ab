// `loom certs init|issue|show`: a small certificate authority for Loom's mutual TLS
// (common/tls_certs.h). Certificates go to the processes that use them through --tls-dir.
#include <cstdio>
#include <string>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "common/command_line.h"
#include "common/tls_certs.h"

namespace loom::cli {
namespace {

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "usage: loom certs init|issue|show [flags]\n\n"
               "A certificate authority for Loom's mutual TLS: every coordinator, worker, rank and client\n"
               "presents a certificate of this CA and accepts only peers that do.\n\n"
               "  init   make a CA (ca.pem, ca.key) in --dir\n"
               "  issue  issue NAME.pem / NAME.key for a role, signed by the CA in --dir\n"
               "  show   print what a certificate says (role, name, host names, expiry)\n\n"
               "Run `loom certs COMMAND --help` for its flags. See docs/operations.md, section TLS.\n");
}

int Init(const Args& args) {
  std::string dir;
  CommandLine cl("loom certs init",
                 "Makes a certificate authority: DIR/ca.pem (give it to every host) and DIR/ca.key (keep it "
                 "here, mode 0600; it signs every certificate). Keys are EC P-256.");
  cl.AddFlag("dir", &dir, "directory to create the CA in (required; made mode 0700)");
  cl.AddEpilog("example:\n  loom certs init --dir /etc/loom/ca");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (dir.empty()) {
    std::fprintf(stderr, "loom certs init: --dir is required (see --help)\n");
    return 2;
  }
  if (absl::Status s = InitCertificateAuthority(dir); !s.ok()) {
    std::fprintf(stderr, "loom certs init: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("made a CA in %s: ca.pem (public), ca.key (private, 0600)\n", dir.c_str());
  return 0;
}

int Issue(const Args& args) {
  std::string dir, role, name, hosts;
  bool force = false;
  absl::Duration validity = absl::Hours(24 * 825);
  CommandLine cl("loom certs issue",
                 "Issues a certificate and key for one identity, signed by the CA in --dir: DIR/NAME.pem and "
                 "DIR/NAME.key (0600). The certificate names the identity as subject CN=NAME, OU=ROLE and as "
                 "the URI loom://ROLE/NAME. A coordinator's certificate also names localhost, 127.0.0.1 and ::1; "
                 "add every name and address clients dial with --host.");
  cl.AddFlag("dir", &dir, "the CA's directory (from `loom certs init`; required)");
  cl.AddFlag("role", &role, "one of " + absl::StrJoin(TlsRoles(), ", ") + " (required)");
  cl.AddFlag("name", &name,
             "the identity and file name: a worker's --worker-id, the coordinator's host, a user (required)");
  cl.AddFlag("host", &hosts,
             "comma-separated host names / IP addresses this identity serves at (coordinator: what workers, "
             "ranks and clients put in --coordinator)");
  cl.AddFlag("validity", &validity, "how long the certificate is valid");
  cl.AddFlag("force", &force, "replace an existing NAME.pem / NAME.key (renewal; running processes reload it)");
  cl.AddEpilog(
      "examples:\n"
      "  loom certs issue --dir /etc/loom/ca --role coordinator --name head-1 --host head-1.cluster,10.0.0.1\n"
      "  loom certs issue --dir /etc/loom/ca --role worker --name gpu-7\n"
      "  loom certs issue --dir /etc/loom/ca --role admin --name alice\n"
      "Then give each host a directory with ca.pem, NAME.pem and NAME.key (never ca.key) and pass it\n"
      "with --tls-dir (or LOOM_TLS_DIR).");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (dir.empty() || role.empty() || name.empty()) {
    std::fprintf(stderr, "loom certs issue: --dir, --role and --name are required (see --help)\n");
    return 2;
  }
  LeafOptions options;
  options.role = role;
  options.name = name;
  options.validity = validity;
  options.overwrite = force;
  for (absl::string_view h : absl::StrSplit(hosts, ',', absl::SkipEmpty())) options.hosts.emplace_back(h);
  if (absl::Status s = IssueCertificate(dir, options); !s.ok()) {
    std::fprintf(stderr, "loom certs issue: %s\n", std::string(s.message()).c_str());
    return s.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::printf("issued %s/%s.pem and %s.key: role %s, name %s\n", dir.c_str(), name.c_str(), name.c_str(),
              role.c_str(), name.c_str());
  return 0;
}

int Show(const Args& args) {
  std::string path;
  CommandLine cl("loom certs show", "Prints what a certificate says: its name, role, host names and expiry.");
  cl.AddPositional("CERT", &path, "a PEM certificate (NAME.pem or ca.pem)");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  absl::StatusOr<CertificateInfo> info = ReadCertificate(path);
  if (!info.ok()) {
    std::fprintf(stderr, "loom certs show: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  std::printf("name      %s\nrole      %s\nissuer    %s\nCA        %s\nURIs      %s\nDNS       %s\nIP        %s\n"
              "expires   %s\nserial    %s\n",
              info->common_name.c_str(), info->organizational_unit.c_str(), info->issuer_common_name.c_str(),
              info->is_ca ? "yes" : "no", absl::StrJoin(info->uris, ", ").c_str(),
              absl::StrJoin(info->dns_names, ", ").c_str(), absl::StrJoin(info->ip_addresses, ", ").c_str(),
              absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", info->not_after, absl::UTCTimeZone()).c_str(),
              info->serial_hex.c_str());
  return 0;
}

}  // namespace

int RunCerts(const Args& args) {
  if (args.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  const Args rest(args.begin() + 1, args.end());
  if (args[0] == "init") return Init(rest);
  if (args[0] == "issue") return Issue(rest);
  if (args[0] == "show") return Show(rest);
  if (args[0] == "--help" || args[0] == "-h") {
    PrintUsage(stdout);
    return 0;
  }
  std::fprintf(stderr, "loom certs: unknown command '%s'\n", args[0].c_str());
  PrintUsage(stderr);
  return 2;
}

}  // namespace loom::cli
