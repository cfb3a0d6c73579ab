// loom-worker: the worker daemon. Registers its slots with the coordinator, runs the ranks it is
// assigned as child processes, forwards their progress and checkpoints, serves /metrics (port
// 7072 by default). On SIGTERM it tells the coordinator it is leaving and stops its ranks at their
// next step boundary.
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "common/command_line.h"
#include "common/files.h"
#include "common/logging.h"
#include "common/metrics_http.h"
#include "common/net.h"
#include "common/tls.h"
#include "worker/daemon/daemon.h"
#include "worker/daemon/peak_flops.h"
#include "worker/daemon/worker_metrics.h"

namespace {

// The thread that waits for SIGINT/SIGTERM; ForwardSignal passes a signal that landed on another
// thread to it (pthread_kill is async-signal-safe).
std::atomic<pthread_t> signal_waiter;

void ForwardSignal(int signal) { pthread_kill(signal_waiter.load(), signal); }

void ForwardSignalsTo(pthread_t waiter) {
  signal_waiter = waiter;
  struct sigaction action = {};
  action.sa_handler = ForwardSignal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// `loom-rank` next to this executable, else in ../libexec/loom/ from it (the installed layout:
// /usr/bin/loom-worker, /usr/libexec/loom/loom-rank), else one directory up (the build tree puts
// loom-worker in worker/daemon/ and loom-rank in worker/). None there: the first, so the error
// names it.
std::string DefaultRankBinary() {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "loom-rank";
  const std::filesystem::path dir = self.parent_path();
  const std::filesystem::path candidates[] = {dir / "loom-rank",
                                              (dir.parent_path() / "libexec/loom/loom-rank").lexically_normal(),
                                              dir.parent_path() / "loom-rank"};
  for (const std::filesystem::path& p : candidates) {
    if (access(p.c_str(), X_OK) == 0) return p.string();
  }
  return candidates[0].string();
}

int Run(const std::vector<std::string>& args) {
  loom::worker::DaemonOptions o;
  std::string devices = "cpu:1";
  std::string listen, advertise, metrics_listen;
  o.work_dir = "loom-work";
  o.rank_binary = DefaultRankBinary();
  o.tls_dir = loom::TlsDirFromEnv();
  o.tls_name = loom::TlsNameFromEnv();
  loom::CommandLine cl(
      "loom-worker",
      "Loom's worker daemon: registers its device slots with the coordinator and runs the ranks "
      "it is assigned, one child process each.");
  cl.AddFlag("coordinator", &o.coordinator, "coordinator address (host:port)");
  cl.AddFlag("listen", &listen,
             "address this worker's /metrics and its ranks' collective sockets bind (default: the local address "
             "of the route to the coordinator; 0.0.0.0 needs --advertise)");
  cl.AddFlag("advertise", &advertise,
             "address peers and Prometheus dial to reach this host (default: --listen); its ranks bind it");
  cl.AddFlag("devices", &devices, "device slots: cpu:N (N ranks at once)");
  cl.AddFlag("threads-per-rank", &o.threads_per_rank, "CPU threads each rank may use");
  cl.AddFlag("peak-flops", &o.peak_flops_per_slot,
             "peak FLOP/s of one slot, for MFU; 0 measures it at start-up (a short sgemm with "
             "--threads-per-rank threads, about 0.3 s). Set it for known hardware or reproducible tests");
  cl.AddFlag("work-dir", &o.work_dir, "where rank directories (assignment, log) are created");
  cl.AddFlag("heartbeat", &o.heartbeat, "heartbeat interval when the coordinator does not set one");
  cl.AddFlag("metrics-listen", &metrics_listen,
             "address of /metrics (default: <listen>:7072; port 0: any free one, printed)");
  cl.AddFlag("worker-id", &o.worker_id,
             "stable id of this worker (default: the id kept in <work-dir>/worker-id, else the host name)");
  cl.AddFlag("stop-grace", &o.stop_grace, "on SIGTERM, how long ranks may run to their next step boundary");
  cl.AddFlag("rank-binary", &o.rank_binary,
             "program that runs one rank (default: loom-rank next to loom-worker, or one directory up)");
  cl.AddFlag("tls-dir", &o.tls_dir,
             "mutual TLS to the coordinator: directory with ca.pem and this worker's NAME.pem/NAME.key "
             "(`loom certs issue --role worker --name ID`); its ranks use it too (default $LOOM_TLS_DIR)");
  cl.AddFlag("tls-name", &o.tls_name,
             "which NAME in --tls-dir (default $LOOM_TLS_NAME, else the worker id if present, else worker, "
             "else the only one)");
  cl.AddEpilog(
      "example:\n  loom-worker --coordinator 10.0.0.1:7070 --devices cpu:2 --work-dir /var/lib/loom-worker\n"
      "Every worker host must mount the coordinator's checkpoint root at the same path; the worker proves it\n"
      "when it registers and is refused otherwise.");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (const char* level = std::getenv("LOOM_LOG_LEVEL")) {
    loom::LogLevel l;
    if (loom::ParseLogLevel(level, &l)) loom::SetLogLevel(l);
  }
  if (!absl::StartsWith(devices, "cpu:") || !absl::SimpleAtoi(devices.substr(4), &o.slots) || o.slots < 1 ||
      o.slots > 1024) {
    std::fprintf(stderr, "loom-worker: --devices '%s' is not cpu:N with 1 <= N <= 1024\n", devices.c_str());
    return 2;
  }
  if (o.threads_per_rank < 1) {
    std::fprintf(stderr, "loom-worker: --threads-per-rank must be at least 1\n");
    return 2;
  }
  if (!(o.peak_flops_per_slot >= 0) || o.peak_flops_per_slot > 1e18) {
    std::fprintf(stderr,
                 "loom-worker: --peak-flops must be a FLOP/s figure between 0 (measure it) and 1e18\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(o.work_dir, ec);
  if (ec) {
    std::fprintf(stderr, "loom-worker: cannot create --work-dir %s: %s\n", o.work_dir.c_str(),
                 ec.message().c_str());
    return 1;
  }
  o.work_dir = std::filesystem::absolute(o.work_dir).lexically_normal().string();
  char hostname[HOST_NAME_MAX + 1] = {};
  gethostname(hostname, sizeof hostname - 1);
  o.host = hostname;
  if (listen.empty()) {
    absl::StatusOr<std::string> route = loom::LocalAddressToward(o.coordinator);
    if (!route.ok()) {
      std::fprintf(stderr, "loom-worker: cannot tell which address reaches --coordinator %s (%s); set --listen\n",
                   o.coordinator.c_str(), std::string(route.status().message()).c_str());
      return 2;
    }
    listen = *route;
  }
  if (advertise.empty()) {
    if (loom::IsWildcardAddress(listen)) {
      std::fprintf(stderr, "loom-worker: --listen %s binds every interface; set --advertise to this host's address\n",
                   listen.c_str());
      return 2;
    }
    advertise = listen;
  }
  o.address = advertise;
  if (metrics_listen.empty()) metrics_listen = absl::StrCat(listen, ":7072");
  if (o.worker_id.empty()) {
    // Stable across restarts: the first start keeps its id in the work directory.
    const std::string id_path = o.work_dir + "/worker-id";
    absl::StatusOr<std::string> kept = loom::ReadFile(id_path);
    o.worker_id = kept.ok() ? std::string(absl::StripAsciiWhitespace(*kept)) : std::string(hostname);
    if (!kept.ok()) {
      if (absl::Status s = loom::WriteFileDurably(id_path, o.worker_id + "\n"); !s.ok()) {
        std::fprintf(stderr, "loom-worker: %s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
  }
  o.version = "loom-worker";
  if (!o.tls_dir.empty()) {
    absl::StatusOr<loom::TlsIdentity> identity = loom::FindTlsIdentity(o.tls_dir, o.tls_name, {o.worker_id, "worker"});
    if (!identity.ok()) {
      std::fprintf(stderr, "loom-worker: --tls-dir: %s\n", std::string(identity.status().message()).c_str());
      return 2;
    }
    o.tls_dir = std::filesystem::absolute(o.tls_dir).lexically_normal().string();
    o.tls_name = identity->name;
    identity->dir = o.tls_dir;
    o.credentials = loom::ChannelTlsCredentials(*identity);
  }

  // SIGINT and SIGTERM are taken by one thread (sigwait), so the worker says goodbye and stops its
  // ranks. They are blocked here, before this thread starts others, but libraries start threads of
  // their own before main (OpenBLAS when it loads): one of those would take a signal with the
  // default action and kill the worker on the spot. The handler below catches it there and passes
  // it on to the waiting thread.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  loom::worker::WorkerMetrics metrics;
  absl::StatusOr<loom::MetricsServer> server = loom::StartMetricsServer(metrics_listen, metrics.registry());
  if (!server.ok()) {
    std::fprintf(stderr, "loom-worker: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }

  std::atomic<bool> stop_requested{false}, done{false};
  std::atomic<loom::worker::WorkerDaemon*> running{nullptr};
  std::thread signal_thread([&] {
    int signal = 0;
    sigwait(&signals, &signal);
    if (!done) loom::Log(loom::LogLevel::kInfo, "worker", o.worker_id, ": signal ", signal, ", stopping");
    stop_requested = true;
    if (loom::worker::WorkerDaemon* daemon = running.load()) daemon->Stop();
  });
  ForwardSignalsTo(signal_thread.native_handle());

  // Measured before any rank runs, so that the slot has its cores to itself (a few hundred ms).
  const bool measured = o.peak_flops_per_slot == 0;
  if (measured) o.peak_flops_per_slot = loom::worker::MeasurePeakFlops(o.threads_per_rank);
  metrics.SetPeakFlops(o.peak_flops_per_slot);
  // Prometheus dials the advertised address at the port bound.
  o.metrics_address = absl::StrCat(advertise, server->address.substr(server->address.rfind(':')));
  std::printf(
      "loom-worker %s%s: %d slots (peak %.3g FLOP/s each, %s), metrics on http://%s/metrics, coordinator %s, "
      "ranks bind %s, ranks run %s\n",
      o.worker_id.c_str(), o.tls_dir.empty() ? "" : " (mutual TLS)", o.slots, o.peak_flops_per_slot,
      measured ? "measured" : "--peak-flops", o.metrics_address.c_str(), o.coordinator.c_str(),
      o.address.c_str(), o.rank_binary.c_str());
  std::fflush(stdout);

  loom::worker::WorkerDaemon daemon(o, &metrics);
  running = &daemon;
  if (!stop_requested) daemon.Run();  // a signal from here on stops it (Stop before Run: Run returns)
  done = true;
  signal(SIGINT, SIG_IGN);  // nothing to forward to once the waiting thread is gone
  signal(SIGTERM, SIG_IGN);
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  running = nullptr;
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(std::vector<std::string>(argv + 1, argv + argc)); }
