// A scan of every port a TLS cluster listens on (a coordinator and two worker daemons, real
// processes on loopback), looking for anything that changes the cluster without authentication.
//
// The ports are not a list kept here: they are found the way an auditor finds them, from the
// sockets the processes (and their children) hold in /proc/PID/fd, matched by inode to the
// listening TCP sockets and bound UDP sockets in /proc/net/{tcp,tcp6,udp,udp6}. A new listener
// added to any of these processes is scanned without changing this test.
//
// Every TCP port: plain-text gRPC must fail (UNAVAILABLE: the handshake refuses it before any
// service runs). The coordinator's gRPC port takes TLS without a client certificate (a CLI user
// with a bearer token has none), and then answers only the read-only health check: every Loom
// method refuses such a caller with UNAUTHENTICATED. Every HTTP port (found by answering a plain
// HTTP request): GET /metrics, and /discovery on the coordinator, are the read-only answers;
// every other path and every other method must not answer 2xx. On the coordinator's gRPC port,
// every method of every Loom service (enumerated from the generated descriptors) is called with
// four kinds of caller: none (plain text), TLS without a certificate or token, a certificate of the
// cluster's CA that names no Loom identity (UNAUTHENTICATED from the role check), and the
// coordinator's own certificate, whose role no RPC accepts (PERMISSION_DENIED). A method whose
// role check went missing answers the last two with something else, and the test fails.
// Every UDP port: forged heartbeat datagrams (every connection id the coordinator can have handed
// out, in the current layout with random MACs and sequence numbers, and in the old layout that
// carried the key, with random keys) must not keep a silent worker alive, while the datagrams of
// the worker that runs on keep it alive.
// After each step, the plans and workers the coordinator lists must be what they were.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/heartbeat_datagram.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/grpc_health_check.h"
#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

struct Listener {
  bool tcp = true;
  std::string host;  // as the socket is bound: "127.0.0.1", "0.0.0.0", "::1", "::"
  int port = 0;
  pid_t pid = 0;
  std::string Address() const {
    // A wildcard listener is reached on loopback; IPv6 in brackets.
    if (host == "0.0.0.0") return "127.0.0.1:" + std::to_string(port);
    if (host == "::") return "[::1]:" + std::to_string(port);
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
  }
  std::string Describe() const {
    return std::string(tcp ? "tcp " : "udp ") + Address() + " (pid " + std::to_string(pid) + ")";
  }
};

// The pids and every descendant of them (ranks under a worker daemon, for instance).
std::set<pid_t> WithDescendants(std::set<pid_t> pids) {
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      const std::string stat = ReadAll(entry.path().string() + "/stat");
      const size_t close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(stat.substr(close + 2));
      char state = 0;
      pid_t parent = 0;
      rest >> state >> parent;
      if (pids.contains(parent) && pids.insert(std::stoi(name)).second) grew = true;
    }
  }
  return pids;
}

// Socket inode -> pid, for every socket the processes hold open.
std::map<uint64_t, pid_t> SocketInodes(const std::set<pid_t>& pids) {
  std::map<uint64_t, pid_t> out;
  for (pid_t pid : pids) {
    std::error_code ec;
    for (const auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
      const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
      if (ec || target.rfind("socket:[", 0) != 0) continue;
      out[std::stoull(target.substr(8, target.size() - 9))] = pid;
    }
  }
  return out;
}

// "0100007F" (IPv4, little-endian words as the kernel prints them) or a 32-digit IPv6 address.
std::string HexAddress(const std::string& hex) {
  char text[INET6_ADDRSTRLEN] = {};
  if (hex.size() == 8) {
    in_addr a{};
    a.s_addr = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
    inet_ntop(AF_INET, &a, text, sizeof text);
  } else {
    in6_addr a{};
    for (int word = 0; word < 4; ++word) {
      const uint32_t w = static_cast<uint32_t>(std::stoul(hex.substr(static_cast<size_t>(word) * 8, 8), nullptr, 16));
      std::memcpy(&a.s6_addr[word * 4], &w, 4);
    }
    inet_ntop(AF_INET6, &a, text, sizeof text);
  }
  return text;
}

// Every listening TCP socket and every bound, unconnected UDP socket of `pids`.
std::vector<Listener> ListeningPorts(const std::set<pid_t>& pids) {
  const std::map<uint64_t, pid_t> inodes = SocketInodes(pids);
  std::vector<Listener> out;
  for (const char* table : {"tcp", "tcp6", "udp", "udp6"}) {
    const bool tcp = table[0] == 't';
    std::istringstream in(ReadAll(std::string("/proc/net/") + table));
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout;
      uint64_t inode = 0;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const auto owner = inodes.find(inode);
      if (owner == inodes.end()) continue;
      // TCP_LISTEN (0A); for UDP, TCP_CLOSE (07) = bound but not connected, so anyone can send to it.
      if (state != (tcp ? "0A" : "07")) continue;
      const size_t colon = local.find(':');
      Listener l;
      l.tcp = tcp;
      l.host = HexAddress(local.substr(0, colon));
      // An IPv6 socket bound to an IPv4 address (gRPC binds so): the IPv4 address, which
      // certificates name.
      if (l.host.rfind("::ffff:", 0) == 0 && l.host.find('.') != std::string::npos) l.host = l.host.substr(7);
      l.port = std::stoi(local.substr(colon + 1), nullptr, 16);
      l.pid = owner->second;
      if (l.port != 0) out.push_back(l);
    }
  }
  return out;
}

// One plain-text HTTP/1.1 request; the status code (0: no HTTP answer) and the whole response.
std::pair<int, std::string> RawHttp(const Listener& l, const std::string& method, const std::string& path) {
  const bool v6 = l.host.find(':') != std::string::npos;
  const int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_storage addr{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(l.port));
    inet_pton(AF_INET6, l.host == "::" ? "::1" : l.host.c_str(), &a->sin6_addr);
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(l.port));
    inet_pton(AF_INET, l.host == "0.0.0.0" ? "127.0.0.1" : l.host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0) {
    const std::string body = method == "GET" ? "" : "{\"state\":\"drain\"}";
    const std::string request = method + " " + path + " HTTP/1.1\r\nHost: " + l.Address() +
                                "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) +
                                "\r\n\r\n" + body;
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd, buf, sizeof buf)) > 0) response.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  int code = 0;
  if (response.rfind("HTTP/1.", 0) == 0 && response.size() > 12) code = std::atoi(response.c_str() + 9);
  return {code, response};
}

std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& dir, const std::string& name) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadAll(dir + "/ca.pem");
  if (!name.empty()) {
    o.pem_private_key = ReadAll(dir + "/" + name + ".key");
    o.pem_cert_chain = ReadAll(dir + "/" + name + ".pem");
  }
  return grpc::SslCredentials(o);
}

// One call of `method` ("/pkg.Service/Method") with `request` bytes, as a unary call whatever the
// method's kind: a streaming method the role check lets through answers something other than the
// refusal (a message, OK, or INTERNAL for a unary call that got none), which fails the test.
grpc::Status CallRaw(const std::string& address, std::shared_ptr<grpc::ChannelCredentials> credentials,
                     const std::string& method, const std::string& request_bytes) {
  grpc::ChannelArguments args;
  args.SetInt("loom.scan.fresh", static_cast<int>(std::random_device()()));  // a connection of its own
  grpc::GenericStub generic(grpc::CreateCustomChannel(address, std::move(credentials), args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), reply;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&context, method, grpc::StubOptions(), &request, &reply,
                    [&](grpc::Status st) { done.set_value(st); });
  return done.get_future().get();
}

// What an unauthenticated call could change: every plan with its jobs' states and attempts, every
// worker with its state and use. Read with the admin certificate.
std::string Snapshot(const std::string& address, const std::string& tls_dir) {
  auto stub = loom::v1::PlanService::NewStub(grpc::CreateChannel(address, Tls(tls_dir, "admin")));
  std::ostringstream out;
  {
    grpc::ClientContext context;
    loom::v1::ListPlansRequest request;
    request.set_include_finished(true);
    loom::v1::ListPlansResponse plans;
    const grpc::Status s = stub->ListPlans(&context, request, &plans);
    if (!s.ok()) return "ListPlans failed: " + s.error_message();
    for (const loom::v1::PlanStatus& p : plans.plans()) {
      out << "plan " << p.plan_id() << " " << loom::v1::PlanState_Name(p.state()) << "\n";
      for (const auto& j : p.jobs()) out << "  job " << j.job_id() << " attempt " << j.attempt() << "\n";
    }
  }
  {
    grpc::ClientContext context;
    loom::v1::ListWorkersResponse workers;
    const grpc::Status s = stub->ListWorkers(&context, loom::v1::ListWorkersRequest(), &workers);
    if (!s.ok()) return "ListWorkers failed: " + s.error_message();
    for (const loom::v1::WorkerStatus& w : workers.workers()) {
      out << "worker " << w.worker_id() << " " << loom::v1::WorkerState_Name(w.state()) << " slots " << w.slots_used()
          << "/" << w.slots() << (w.draining() ? " draining" : "") << "\n";
    }
  }
  return out.str();
}

// A certificate of the cluster's CA with no Loom identity (subject CN=NAME only: no OU, no
// loom:// URI), for client authentication: the TLS handshake accepts it, the role check must not.
// Written as DIR/NAME.pem and DIR/NAME.key.
template <typename T, void (*Free)(T*)>
struct SslFree {
  void operator()(T* p) const { Free(p); }
};
template <typename T, void (*Free)(T*)>
using SslPtr = std::unique_ptr<T, SslFree<T, Free>>;
using Bio = SslPtr<BIO, BIO_free_all>;
using Cert = SslPtr<X509, X509_free>;
using Key = SslPtr<EVP_PKEY, EVP_PKEY_free>;
using Extension = SslPtr<X509_EXTENSION, X509_EXTENSION_free>;

void IssueIdentitylessCertificate(const std::string& dir, const std::string& name) {
  const Bio ca_pem(BIO_new_file((dir + "/ca.pem").c_str(), "r")), ca_key_pem(BIO_new_file((dir + "/ca.key").c_str(), "r"));
  ASSERT_TRUE(ca_pem && ca_key_pem) << "no CA in " << dir;
  const Cert ca(PEM_read_bio_X509(ca_pem.get(), nullptr, nullptr, nullptr));
  const Key ca_key(PEM_read_bio_PrivateKey(ca_key_pem.get(), nullptr, nullptr, nullptr));
  ASSERT_TRUE(ca && ca_key) << "cannot read the CA in " << dir;
  const Key key(EVP_EC_gen("P-256"));
  const Cert cert(X509_new());
  ASSERT_TRUE(key && cert);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 424242);
  X509_set_version(cert.get(), 2);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get()));
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), cert.get(), nullptr, nullptr, 0);
  for (const auto& [nid, value] : std::vector<std::pair<int, const char*>>{
           {NID_basic_constraints, "critical,CA:FALSE"}, {NID_ext_key_usage, "clientAuth"}}) {
    const Extension ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    ASSERT_TRUE(ext && X509_add_ext(cert.get(), ext.get(), -1) == 1);
  }
  ASSERT_GT(X509_sign(cert.get(), ca_key.get(), EVP_sha256()), 0);
  const Bio pem(BIO_new_file((dir + "/" + name + ".pem").c_str(), "w"));
  const Bio key_pem(BIO_new_file((dir + "/" + name + ".key").c_str(), "w"));
  ASSERT_TRUE(pem && key_pem && PEM_write_bio_X509(pem.get(), cert.get()) == 1 &&
              PEM_write_bio_PrivateKey(key_pem.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1);
  std::filesystem::permissions(dir + "/" + name + ".key",
                               std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(PortScan, NothingChangesTheClusterWithoutAuthentication) {
  Cluster cluster({.tls = true});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 1);
  cluster.StartWorker("w2", 1);
  const std::string tls = cluster.tls_dir();
  IssueIdentitylessCertificate(tls, "anonymous");
  if (::testing::Test::HasFatalFailure()) return;
  const std::string id = cluster.Submit(SourcePath("tests/integration/two_stage_plan.yaml"));
  ASSERT_EQ(id, "twostage-1");
  ASSERT_EQ(cluster.WaitForPlan(id, [](const auto& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }).state(),
            loom::v1::PLAN_STATE_SUCCEEDED)
      << cluster.Logs();

  const pid_t coordinator = cluster.coordinator()->pid();
  const std::set<pid_t> pids =
      WithDescendants({coordinator, cluster.worker("w1")->pid(), cluster.worker("w2")->pid()});
  const std::vector<Listener> ports = ListeningPorts(pids);
  std::string found;
  for (const Listener& l : ports) found += "  " + l.Describe() + "\n";
  std::printf("listening:\n%s", found.c_str());

  const std::string before = Snapshot(cluster.address(), tls);
  ASSERT_NE(before.find("plan twostage-1 PLAN_STATE_SUCCEEDED"), std::string::npos) << before;
  ASSERT_NE(before.find("worker w2 WORKER_STATE_IDLE"), std::string::npos) << before;

  // The coordinator's gRPC port is among them, found from /proc like the rest.
  const int grpc_port = std::stoi(cluster.address().substr(cluster.address().rfind(':') + 1));
  int grpc_ports = 0, http_ports = 0, udp_ports = 0;
  for (const Listener& l : ports) {
    if (!l.tcp) continue;
    SCOPED_TRACE(l.Describe());
    const auto [code, response] = RawHttp(l, "GET", "/metrics");
    if (code != 0) {
      ++http_ports;
      // Not gRPC: gRPC without TLS and TLS without a client certificate get nowhere (the TLS
      // ClientHello is no HTTP request line; the server waits for one until the deadline).
      for (const auto& credentials : {grpc::InsecureChannelCredentials(), Tls(tls, "")}) {
        const grpc::Status s = CheckHealth(l.Address(), credentials, std::chrono::seconds(1)).status;
        EXPECT_TRUE(s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                    s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
            << s.error_code() << " " << s.error_message();
      }
      // Read-only answers: /metrics everywhere, Prometheus's service discovery on the coordinator.
      EXPECT_EQ(code, 200) << response.substr(0, 200);
      const bool on_coordinator = l.pid == coordinator;
      if (on_coordinator) {
        EXPECT_EQ(RawHttp(l, "GET", "/discovery").first, 200);
      }
      for (const char* path : {"/", "/admin", "/plans", "/api/v1/plans", "/workers/w1/drain", "/debug/pprof",
                               "/metrics/../../etc/passwd", "/%2e%2e/etc/passwd", "/quitquitquit"}) {
        const int c = RawHttp(l, "GET", path).first;
        EXPECT_TRUE(c < 200 || c >= 300) << "GET " << path << " answered " << c;
      }
      for (const char* method : {"POST", "PUT", "DELETE", "PATCH"}) {
        for (const char* path : {"/", "/metrics", "/discovery", "/plans", "/workers/w1/drain"}) {
          const int c = RawHttp(l, method, path).first;
          EXPECT_TRUE(c < 200 || c >= 300) << method << " " << path << " answered " << c;
        }
      }
      continue;
    }

    // A gRPC port. No credentials: refused in the handshake, before any service runs. TLS without a
    // client certificate gets through the handshake (the certificate is requested, not required,
    // for bearer-token clients) and reaches only the read-only health check; the admin
    // certificate gets in.
    ++grpc_ports;
    const HealthCheckResult plain = CheckHealth(l.Address(), grpc::InsecureChannelCredentials(), std::chrono::seconds(3));
    EXPECT_EQ(plain.status.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.status.error_message();
    const HealthCheckResult no_cert = CheckHealth(l.Address(), Tls(tls, ""), std::chrono::seconds(3));
    EXPECT_TRUE(no_cert.status.ok()) << no_cert.status.error_message();
    EXPECT_TRUE(CheckHealth(l.Address(), Tls(tls, "admin"), std::chrono::seconds(3)).status.ok());
    const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
    int methods = 0;
    for (const std::string service_name :
         {loom::v1::PlanService::service_full_name(), loom::v1::WorkerService::service_full_name(),
          loom::v1::RendezvousService::service_full_name()}) {
      const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(service_name);
      ASSERT_NE(service, nullptr) << service_name;
      for (int m = 0; m < service->method_count(); ++m) {
        const std::string method = "/" + service_name + "/" + service->method(m)->name();
        SCOPED_TRACE(method);
        ++methods;
        // An empty request, except a worker stream's: its empty first message is refused before
        // anyone's identity is looked at, so it registers a worker (the one a role check guards).
        std::string request;
        if (service->method(m)->name() == "Connect") {
          loom::v1::WorkerMessage hello;
          hello.mutable_register_()->set_worker_id("w1");
          hello.mutable_register_()->set_host("intruder");
          request = hello.SerializeAsString();
        }
        EXPECT_EQ(CallRaw(l.Address(), grpc::InsecureChannelCredentials(), method, request).error_code(),
                  grpc::StatusCode::UNAVAILABLE);
        const grpc::Status no_cert_call = CallRaw(l.Address(), Tls(tls, ""), method, request);
        EXPECT_EQ(no_cert_call.error_code(), grpc::StatusCode::UNAUTHENTICATED) << no_cert_call.error_message();
        const grpc::Status anonymous = CallRaw(l.Address(), Tls(tls, "anonymous"), method, request);
        EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << anonymous.error_message();
        const grpc::Status no_role = CallRaw(l.Address(), Tls(tls, "coordinator"), method, request);
        EXPECT_EQ(no_role.error_code(), grpc::StatusCode::PERMISSION_DENIED) << no_role.error_message();
      }
    }
    EXPECT_GE(methods, 18);  // 13 PlanService, 2 WorkerService, 3 RendezvousService today; new ones are scanned too
    EXPECT_EQ(l.port, grpc_port);
  }
  EXPECT_EQ(grpc_ports, 1) << found;
  EXPECT_EQ(http_ports, 3) << found;  // the coordinator's and each worker's /metrics
  EXPECT_EQ(Snapshot(cluster.address(), tls), before) << "a call without authentication changed the cluster";

  // UDP: the coordinator's heartbeat datagrams. Stop w2 (its stream stays open, it sends nothing)
  // and forge datagrams for every connection id the coordinator has handed out: well-formed ones
  // with random MACs and sequence numbers (low ones, as a worker's first, and any), and ones of the
  // old 32-byte layout with random keys. w2 must be lost after the heartbeat timeout (2 s) all the
  // same, and w1, whose own signed datagrams arrive among them, untouched.
  std::mt19937_64 random(std::random_device{}());
  for (const Listener& l : ports) {
    if (l.tcp) continue;
    ++udp_ports;
    SCOPED_TRACE(l.Describe());
    EXPECT_EQ(l.pid, coordinator) << "only the coordinator takes datagrams";
    const std::string host = l.host == "0.0.0.0" ? "127.0.0.1" : l.host;
    absl::StatusOr<std::unique_ptr<HeartbeatSender>> sender = HeartbeatSender::Open(host, l.port);
    ASSERT_TRUE(sender.ok()) << sender.status();
    const int old_layout = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(old_layout, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(l.port));
    ASSERT_EQ(inet_pton(AF_INET, host.c_str(), &to.sin_addr), 1) << host;
    ASSERT_EQ(kill(cluster.worker("w2")->pid(), SIGSTOP), 0);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (uint64_t round = 1; std::chrono::steady_clock::now() < until; ++round) {
      for (int64_t connection = 0; connection < 200; ++connection) {
        HeartbeatDatagram forged;
        forged.connection = connection;
        forged.sequence = round % 2 == 0 ? round : random();
        for (uint8_t& b : forged.mac) b = static_cast<uint8_t>(random());
        (*sender)->Send(forged);
        // Version 1: "LMHB", 1, three zeros, the connection id (big-endian), a 16-byte key.
        std::string v1("LMHB\1\0\0\0", 8);
        for (int i = 7; i >= 0; --i) v1 += static_cast<char>((connection >> (8 * i)) & 0xff);
        for (int i = 0; i < 16; ++i) v1 += static_cast<char>(random());
        sendto(old_layout, v1.data(), v1.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    close(old_layout);
    const std::string after = Snapshot(cluster.address(), tls);
    kill(cluster.worker("w2")->pid(), SIGCONT);
    EXPECT_NE(after.find("worker w2 WORKER_STATE_LOST"), std::string::npos)
        << "forged heartbeat datagrams kept a silent worker alive:\n" << after;
    EXPECT_NE(after.find("worker w1 WORKER_STATE_IDLE"), std::string::npos) << after;
    EXPECT_NE(after.find("plan twostage-1 PLAN_STATE_SUCCEEDED"), std::string::npos) << after;
    // w1 heartbeats on its stream only every 30 s: its datagrams alone kept it alive all along.
    EXPECT_EQ(cluster.coordinator()->log().find("worker w1 lost"), std::string::npos) << cluster.Logs();
    // And the coordinator counted what it dropped (its metrics refresh every 0.5 s): the forged
    // MACs as bad_mac (on the live connections: tens), the ids of no live connection as
    // unknown_connection and the old layout as malformed (thousands each).
    auto dropped = [&](const std::string& reason) {
      const std::string metrics = cluster.Get(cluster.coordinator_metrics(), "/metrics");
      const std::string series = "loom_heartbeat_datagrams_dropped_total{reason=\"" + reason + "\"} ";
      const size_t at = metrics.find(series);
      return at == std::string::npos ? -1.0 : std::atof(metrics.c_str() + at + series.size());
    };
    for (int i = 0; i < 30 && (dropped("bad_mac") < 10 || dropped("malformed") < 1000); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_GE(dropped("bad_mac"), 10) << "forged datagrams are not counted as bad_mac";
    EXPECT_GE(dropped("unknown_connection"), 1000);
    EXPECT_GE(dropped("malformed"), 1000) << "old-layout datagrams are not counted as malformed";
  }
  EXPECT_EQ(udp_ports, 1) << found;
}

}  // namespace
}  // namespace loom::testing
