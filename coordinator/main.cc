// loom-coordinator: the plan API, worker sessions, scheduler, store and rendezvous, on one port;
// Prometheus /metrics and service discovery (/discovery) on another. On SIGINT/SIGTERM it first
// reports NOT_SERVING on gRPC health (load balancers and `loom` stop sending), then stops; a
// SIGKILL loses nothing that was acknowledged (every state change is a synced RocksDB write).
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/command_line.h"
#include "common/heartbeat_datagram.h"
#include "common/logging.h"
#include "common/metrics_http.h"
#include "common/tls.h"
#include "coordinator/coordinator.h"
#include "coordinator/metrics.h"
#include "coordinator/discovery.h"
#include "coordinator/service.h"
#include "coordinator/storage_proof.h"
#include "coordinator/store.h"
#include "coordinator/token_store.h"

namespace {

int Run(const std::vector<std::string>& args) {
  // Debian builds Abseil without NDEBUG, which turns on absl::Mutex deadlock detection: a
  // lock-order graph updated on every lock (about 5% of the coordinator's CPU samples with 1,000
  // heartbeating workers).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string listen = "127.0.0.1:7070";
  std::string data_dir;
  std::string checkpoint_root;
  std::string prepared_data;
  std::string allowed_roots;
  bool allow_any_path = false;
  absl::Duration plan_retention = absl::Hours(24 * 7);
  std::string advertise;
  std::string metrics_listen = "127.0.0.1:7071";
  absl::Duration heartbeat = absl::Seconds(1);
  absl::Duration heartbeat_timeout = absl::Seconds(5);
  absl::Duration adopt_grace = absl::Seconds(10);
  std::string tls_dir = loom::TlsDirFromEnv();
  std::string tls_name = loom::TlsNameFromEnv();
  absl::Duration tls_reload = loom::kDefaultTlsReload;
  bool insecure = false;
  int history_points = loom::coordinator::RunHistory::kDefaultMaxPoints;
  loom::CommandLine cl("loom-coordinator",
                       "Loom's coordinator: accepts plans, schedules their stages as jobs on worker daemons, "
                       "recovers from failures, and keeps its state in RocksDB.");
  cl.AddFlag("listen", &listen,
             "gRPC address to bind (host:port; port 0 picks a free one; 0.0.0.0 only when you mean every "
             "interface)");
  cl.AddFlag("advertise", &advertise,
             "this coordinator's address as others reach it (host:port; default: --listen, which must then "
             "not be 0.0.0.0): its own target in /discovery and its start-up line. Workers, ranks and clients "
             "dial what their own --coordinator says");
  cl.AddFlag("data-dir", &data_dir, "directory of the RocksDB store (required)");
  cl.AddFlag("checkpoint-root", &checkpoint_root,
             "root of checkpoint directories (default: <data-dir>/checkpoints); every worker host must "
             "mount it at the same path, and proves it does when it registers");
  cl.AddFlag("prepared-data", &prepared_data,
             "prepared data (`loom data prepare` output) for plans that set no data.dir");
  cl.AddFlag("allowed-roots", &allowed_roots,
             "colon-separated directories, besides this coordinator's own, that the paths a plan names may lie "
             "in. Every path a plan names (data.dir, data.tokenizer, its sources, checkpoint references) must "
             "resolve, after `..` and symlinks, inside --data-dir, --checkpoint-root, --prepared-data or one of "
             "these; anything else is refused at submit with its field path. The ranks check again where they "
             "read (each assignment carries the roots), so a symlink swapped in after submit is refused too");
  cl.AddFlag("allow-any-path", &allow_any_path,
             "do not confine plan paths: a plan may then make workers read any file they can (/etc, other "
             "users' data, keys). For a single-user machine only; logged as a warning at start");
  cl.AddFlag("plan-retention", &plan_retention,
             "how long a plan that ended (succeeded, failed or cancelled) is kept: then its records, run "
             "history and metric series are forgotten (its checkpoint files stay on disk). 0 keeps plans "
             "forever");
  cl.AddFlag("metrics-listen", &metrics_listen,
             "HTTP address of /metrics and of Prometheus service discovery at /discovery (port 0: any free one)");
  cl.AddFlag("heartbeat", &heartbeat, "how often workers must heartbeat");
  cl.AddFlag("heartbeat-timeout", &heartbeat_timeout, "a worker silent this long is lost");
  cl.AddFlag("adopt-grace", &adopt_grace,
             "after a restart, how long running attempts wait for their workers to reconnect");
  cl.AddFlag("tls-dir", &tls_dir,
             "mutual TLS on the gRPC port: directory with ca.pem and this coordinator's NAME.pem/NAME.key "
             "(`loom certs`); every client, worker and rank must then present a certificate of that CA "
             "(default $LOOM_TLS_DIR)");
  cl.AddFlag("tls-name", &tls_name,
             "which NAME in --tls-dir (default $LOOM_TLS_NAME, else coordinator if present, else the only one)");
  cl.AddFlag("tls-reload", &tls_reload,
             "how often the certificate files are checked for changes (replaced files apply to new "
             "connections, no restart)");
  cl.AddFlag("insecure", &insecure,
             "allow a --listen address other hosts can reach without --tls-dir (anyone who reaches the port "
             "can then submit, cancel and register as any worker)");
  cl.AddFlag("history-points", &history_points,
             "run history (`loom metrics`): at most this many points per job in the store; past it only every "
             "2nd, then 4th, ... step is kept, so the history spans the whole run evenly, the newest step always "
             "(at least 2)");
  cl.AddEpilog(
      "ports: 7070 gRPC (clients, workers, ranks' rendezvous) and UDP (workers' heartbeats), 7071 /metrics and\n"
      "/discovery.\n"
      "example:\n  loom-coordinator --data-dir /var/lib/loom --checkpoint-root /shared/loom/checkpoints \\\n"
      "    --listen 0.0.0.0:7070 --advertise head-1.cluster:7070 --metrics-listen 0.0.0.0:7071 \\\n"
      "    --tls-dir /etc/loom/tls --allowed-roots /shared/datasets:/shared/models --plan-retention 30d\n"
      "Without --tls-dir the gRPC port is plain and unauthenticated: allowed on a loopback --listen only,\n"
      "elsewhere only with --insecure.");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (const char* level = std::getenv("LOOM_LOG_LEVEL")) {
    loom::LogLevel l;
    if (loom::ParseLogLevel(level, &l)) loom::SetLogLevel(l);
  }
  if (data_dir.empty()) {
    std::fprintf(stderr, "loom-coordinator: --data-dir is required (see --help)\n");
    return 2;
  }
  const auto wildcard = [](const std::string& address) {
    return address.rfind("0.0.0.0:", 0) == 0 || address.rfind("[::]:", 0) == 0 || address.rfind(':') == 0;
  };
  if (advertise.empty() && wildcard(listen)) {
    std::fprintf(stderr,
                 "loom-coordinator: --listen %s binds every interface; say which address workers should dial "
                 "with --advertise HOST:PORT\n",
                 listen.c_str());
    return 2;
  }
  // Unauthenticated gRPC is for this host only: anything else must be asked for by name.
  if (tls_dir.empty() && !insecure && !loom::IsLoopbackAddress(listen)) {
    std::fprintf(stderr,
                 "loom-coordinator: refusing to listen on %s without TLS: anyone who reaches it could submit, "
                 "cancel and register as any worker. Pass --tls-dir DIR (a CA and certificates from `loom certs "
                 "init` / `loom certs issue`), or --insecure if this network is trusted\n",
                 listen.c_str());
    return 2;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!tls_dir.empty()) {
    absl::StatusOr<loom::TlsIdentity> identity = loom::FindTlsIdentity(tls_dir, tls_name, {"coordinator"});
    if (!identity.ok()) {
      std::fprintf(stderr, "loom-coordinator: --tls-dir: %s\n", std::string(identity.status().message()).c_str());
      return 2;
    }
    // Clients without a certificate get through the handshake only to be refused by every RPC
    // unless they carry a valid bearer token (PlanService only; coordinator/authorization.h).
    credentials = loom::ServerTlsCredentialsCertificateOptional(*identity, tls_reload);
    loom::Log(loom::LogLevel::kInfo, "coordinator", "mutual TLS as ", identity->name, " (", identity->cert_path,
              "), client certificates required (or a bearer token for the plan API)");
  } else if (insecure && !loom::IsLoopbackAddress(listen)) {
    loom::Log(loom::LogLevel::kWarning, "coordinator", "--insecure: gRPC on ", listen,
              " without TLS; anyone who reaches it is trusted");
  }
  if (checkpoint_root.empty()) checkpoint_root = data_dir + "/checkpoints";
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  std::filesystem::create_directories(checkpoint_root, ec);
  checkpoint_root = std::filesystem::absolute(checkpoint_root).lexically_normal().string();

  // Signals are taken by a sigwait in this thread; every other thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<loom::coordinator::Store>> store =
      loom::coordinator::Store::Open(data_dir + "/store");
  if (!store.ok()) {
    std::fprintf(stderr, "loom-coordinator: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  loom::coordinator::CoordinatorOptions options;
  options.checkpoint_root = checkpoint_root;
  if (!prepared_data.empty()) {
    options.prepared_data = std::filesystem::absolute(prepared_data).lexically_normal().string();
  }
  // Paths a plan names are confined to the coordinator's own directories and the --allowed-roots,
  // unless confinement is switched off by name.
  if (allow_any_path) {
    if (!allowed_roots.empty()) {
      std::fprintf(stderr, "loom-coordinator: --allowed-roots and --allow-any-path contradict each other; pass one\n");
      return 2;
    }
    loom::Log(loom::LogLevel::kWarning, "coordinator",
              "--allow-any-path: plan paths are not confined; a plan can make workers read any file they can");
  } else {
    options.allowed_roots = {std::filesystem::absolute(data_dir).lexically_normal().string(), checkpoint_root};
    if (!options.prepared_data.empty()) options.allowed_roots.push_back(options.prepared_data);
    for (absl::string_view root : absl::StrSplit(allowed_roots, ':', absl::SkipEmpty())) {
      options.allowed_roots.push_back(std::filesystem::absolute(std::string(root)).lexically_normal().string());
    }
    loom::Log(loom::LogLevel::kInfo, "coordinator", "plan paths confined to ",
              absl::StrJoin(options.allowed_roots, ", "));
  }
  options.plan_retention = plan_retention;
  if (plan_retention > absl::ZeroDuration()) {
    loom::Log(loom::LogLevel::kInfo, "coordinator", "plans that ended are forgotten after ",
              absl::FormatDuration(plan_retention));
  }
  absl::StatusOr<std::string> token = loom::coordinator::EnsureStorageToken(checkpoint_root);
  if (!token.ok()) {
    std::fprintf(stderr, "loom-coordinator: %s\n", std::string(token.status().message()).c_str());
    return 1;
  }
  options.storage_token = *token;
  options.heartbeat_interval = heartbeat;
  options.heartbeat_timeout = heartbeat_timeout;
  options.adopt_grace = adopt_grace;
  if (history_points < 2) {
    std::fprintf(stderr, "loom-coordinator: --history-points %d: must be at least 2\n", history_points);
    return 2;
  }
  options.history_max_points = history_points;
  // Deadlines (heartbeats, retries, adoption) must not move when the wall clock steps.
  auto clock = [] { return loom::MonotonicUnixMillis(); };
  absl::StatusOr<std::unique_ptr<loom::coordinator::Coordinator>> coordinator =
      loom::coordinator::Coordinator::Create(store->get(), options, clock);
  if (!coordinator.ok()) {
    std::fprintf(stderr, "loom-coordinator: %s\n", std::string(coordinator.status().message()).c_str());
    return 1;
  }

  loom::coordinator::CoordinatorMetrics metrics;
  // Prometheus dials the coordinator at its advertised host and its metrics port.
  absl::Mutex target_mu;
  std::string metrics_target;  // set once the port is known
  loom::HttpServer::Routes discovery;
  discovery["/discovery"] = [&] {
    std::string target;
    {
      absl::MutexLock lock(&target_mu);
      target = metrics_target;
    }
    return loom::HttpResponse{200, "application/json",
                              loom::coordinator::DiscoveryJson(target, (*coordinator)->ListWorkers())};
  };
  absl::StatusOr<loom::MetricsServer> metrics_server =
      loom::StartMetricsServer(metrics_listen, metrics.registry(), std::move(discovery));
  if (!metrics_server.ok()) {
    std::fprintf(stderr, "loom-coordinator: %s\n", std::string(metrics_server.status().message()).c_str());
    return 1;
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Bearer tokens for CLI users without a certificate; hashes only, in the same store.
  absl::StatusOr<std::unique_ptr<loom::coordinator::TokenStore>> tokens =
      loom::coordinator::TokenStore::Open(store->get());
  if (!tokens.ok()) {
    std::fprintf(stderr, "loom-coordinator: %s\n", std::string(tokens.status().message()).c_str());
    return 1;
  }
  loom::coordinator::PlanServiceImpl plan_service(coordinator->get(), tokens->get());
  loom::coordinator::WorkerServiceImpl worker_service(coordinator->get());
  loom::coordinator::RendezvousServiceImpl rendezvous_service(&(*coordinator)->rendezvous());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterService(&plan_service);
  builder.RegisterService(&worker_service);
  builder.RegisterService(&rendezvous_service);
  // Workers keep their stream open for days: keepalive pings close the connections of dead peers.
  // A dead worker is noticed by its heartbeats (datagrams) stopping; the pings only reclaim its
  // connection, so once a minute: with 10,000 workers, every 10 s was 1,000 pings a second.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // No bandwidth-delay-product probing: it answers data with a PING, a round trip per worker
  // heartbeat on each worker's connection, and the coordinator moves no bulk data to tune for.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "loom-coordinator: cannot listen on %s (in use, or not an address)\n",
                 listen.c_str());
    return 1;
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = absl::StrCat(host, ":", port);
  if (advertise.empty()) advertise = address;
  const std::string advertised_host = advertise.substr(0, advertise.rfind(':'));
  {
    absl::MutexLock target_lock(&target_mu);
    metrics_target =
        wildcard(metrics_server->address)
            ? absl::StrCat(advertised_host, metrics_server->address.substr(metrics_server->address.rfind(':')))
            : metrics_server->address;
  }
  std::printf("loom-coordinator listening on %s%s (advertised as %s), metrics on http://%s/metrics, data in %s\n",
              address.c_str(), tls_dir.empty() ? "" : " with mutual TLS", advertise.c_str(),
              metrics_server->address.c_str(), data_dir.c_str());
  std::fflush(stdout);
  loom::Log(loom::LogLevel::kInfo, "coordinator", "listening on ", address, "; checkpoints under ",
            checkpoint_root);
  // Heartbeats as datagrams on the same port number, UDP (common/heartbeat_datagram.h). Where that
  // port is taken, workers heartbeat on their streams, as before.
  absl::StatusOr<std::unique_ptr<loom::HeartbeatReceiver>> datagrams = loom::HeartbeatReceiver::Start(
      host, port, [&](const loom::HeartbeatDatagram& beat) { (*coordinator)->OnHeartbeatDatagram(beat); });
  if (datagrams.ok()) {
    (*coordinator)->EnableHeartbeatDatagrams((*datagrams)->port());
    loom::Log(loom::LogLevel::kInfo, "coordinator", "heartbeat datagrams on UDP ", host, ":", (*datagrams)->port());
  } else {
    loom::Log(loom::LogLevel::kWarning, "coordinator", "no heartbeat datagrams (", datagrams.status().message(),
              "); workers heartbeat on their streams");
  }

  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    int n = 0;
    while (!stop) {
      (*coordinator)->Tick();
      if (++n % 5 == 0) {
        loom::coordinator::MetricsSnapshot snapshot = (*coordinator)->Metrics();
        if (datagrams.ok()) snapshot.dropped_datagrams["malformed"] = static_cast<int64_t>((*datagrams)->rejected());
        metrics.Update(snapshot);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });

  int signal = 0;
  sigwait(&signals, &signal);
  loom::Log(loom::LogLevel::kInfo, "coordinator", "signal ", signal, ": NOT_SERVING, shutting down");
  // Health first, so that whatever routes to this coordinator stops before the port closes.
  server->GetHealthCheckService()->SetServingStatus(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  plan_service.Shutdown();
  stop = true;
  ticker.join();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(std::vector<std::string>(argv + 1, argv + argc)); }
