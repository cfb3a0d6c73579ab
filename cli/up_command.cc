// `loom up`: the embedded default. A coordinator and N local CPU workers as child processes in
// the foreground, supervised: one that dies is restarted (with a log line and a backoff), so a job
// that lost a worker resumes on it. Ctrl-C or SIGTERM stops them all (workers first, so their
// ranks end cleanly).
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "common/command_line.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/tls_certs.h"

extern char** environ;

namespace loom::cli {
namespace {

// `name` beside this executable (the installed layout puts loom, loom-coordinator and
// loom-worker in one bin directory), or where the build tree puts it, or on PATH.
std::string FindBinary(const std::string& name, const std::string& build_subdir) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const std::filesystem::path& p :
         {self.parent_path() / name, self.parent_path().parent_path() / build_subdir / name}) {
      if (access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  return name;  // posix_spawnp searches PATH
}

pid_t Spawn(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    std::fprintf(stderr, "loom up: cannot start %s: %s\n", argv[0].c_str(), std::strerror(rc));
    return -1;
  }
  return pid;
}

// SIGTERM, then SIGKILL after `grace`; reaps.
void Stop(pid_t pid, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  const auto until = std::chrono::steady_clock::now() + grace;
  int status;
  while (std::chrono::steady_clock::now() < until) {
    if (waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
}

using Clock = std::chrono::steady_clock;

// A supervised child process: restarted with a growing backoff when it ends (0.5 s, doubling to
// 30 s, back to 0.5 s once it has run a minute); five failures in a row within two seconds of
// starting are a fault of the configuration, not of the moment, and end the supervision.
struct Child {
  std::string name;
  std::vector<std::string> argv;
  pid_t pid = -1;
  Clock::time_point started, restart_at;
  std::chrono::milliseconds backoff{500};
  int quick_failures = 0;

  bool Start() {
    pid = Spawn(argv);
    if (pid < 0) return false;
    if (starts++ > 0) std::fprintf(stderr, "loom up: restarted %s (pid %d)\n", name.c_str(), static_cast<int>(pid));
    started = Clock::now();
    return true;
  }

  // It ended with `status`; false when it should not be restarted any more.
  bool Ended(int status) {
    const pid_t was = pid;
    pid = -1;
    const auto ran = Clock::now() - started;
    const std::string how = WIFSIGNALED(status) ? absl::StrCat("was killed by signal ", WTERMSIG(status))
                                                : absl::StrCat("exited with code ", WEXITSTATUS(status));
    if (ran >= std::chrono::minutes(1)) backoff = std::chrono::milliseconds(500);
    quick_failures = ran < std::chrono::seconds(2) && !WIFSIGNALED(status) ? quick_failures + 1 : 0;
    if (quick_failures >= 5) {
      std::fprintf(stderr, "loom up: %s %s within 2 s of starting, 5 times in a row; giving up (see its log)\n",
                   name.c_str(), how.c_str());
      return false;
    }
    std::fprintf(stderr, "loom up: %s (pid %d) %s after %.1f s; restarting it in %.1f s\n", name.c_str(),
                 static_cast<int>(was), how.c_str(),
                 std::chrono::duration<double>(ran).count(), backoff.count() / 1000.0);
    restart_at = Clock::now() + backoff;
    backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    return true;
  }
  int starts = 0;
};

}  // namespace

int RunUp(const Args& args) {
  int workers = 2, slots = 1, threads = 1;
  std::string data_dir, prepared, listen = "127.0.0.1:7070", metrics_listen = "127.0.0.1:7071", rank_binary;
  bool insecure = false;
  std::string allowed_roots, plan_retention;
  CommandLine cl("loom up",
                 "Runs Loom on this machine in the foreground: a coordinator and N CPU workers, restarted "
                 "when they die (a job that lost a worker resumes on it). Ctrl-C stops them all.");
  cl.AddFlag("workers", &workers, "number of local worker daemons");
  cl.AddFlag("slots-per-worker", &slots, "ranks each worker runs at once (cpu:N)");
  cl.AddFlag("threads-per-rank", &threads, "CPU threads per rank");
  cl.AddFlag("data-dir", &data_dir, "coordinator store, checkpoints and worker directories (required)");
  cl.AddFlag("prepared-data", &prepared,
             "prepared data (`loom data prepare` output) for plans that set no data.dir (default: "
             "<data-dir>/prepared)");
  cl.AddFlag("listen", &listen, "coordinator gRPC address");
  cl.AddFlag("metrics-listen", &metrics_listen, "coordinator /metrics address (workers pick free ports)");
  cl.AddFlag("rank-binary", &rank_binary,
             "program that runs one rank (default: loom-rank next to loom-worker)");
  cl.AddFlag("allowed-roots", &allowed_roots,
             "colon-separated directories plans may name paths in (data.dir, tokenizer, checkpoint paths), "
             "besides the coordinator's store, the checkpoints and --prepared-data; everything else is refused "
             "at submit (loom-coordinator --allowed-roots)");
  cl.AddFlag("plan-retention", &plan_retention,
             "how long plans that ended are kept before the coordinator forgets them, e.g. 7d, 12h; 0 keeps them "
             "forever (default: the coordinator's, 7d)");
  cl.AddFlag("insecure", &insecure,
             "no TLS: plain, unauthenticated gRPC between the client, coordinator, workers and ranks (anyone who "
             "reaches --listen is trusted)");
  cl.AddEpilog(
      "Mutual TLS by default: the first start makes a CA and certificates in <data-dir>/tls (coordinator,\n"
      "local-N for each worker, admin for you); later starts reuse them. Point the client at them:\n"
      "  export LOOM_TLS_DIR=<data-dir>/tls\n"
      "example:\n  loom up --workers 2 --data-dir /tmp/loom &\n  export LOOM_TLS_DIR=/tmp/loom/tls\n"
      "  loom submit examples/plans/demo.yaml");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (data_dir.empty() || workers < 1) {
    std::fprintf(stderr, "loom up: --data-dir is required and --workers must be at least 1 (see --help)\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  data_dir = std::filesystem::absolute(data_dir).lexically_normal().string();
  if (prepared.empty()) prepared = data_dir + "/prepared";
  // The secure default: a CA of its own and a certificate for each process, made once.
  const std::string tls_dir = data_dir + "/tls";
  if (!insecure) {
    std::vector<std::string> hosts;
    const std::string listen_host = listen.substr(0, listen.rfind(':'));
    if (!IsLoopbackAddress(listen) && !IsWildcardAddress(listen) && !listen_host.empty()) hosts.push_back(listen_host);
    std::vector<LeafOptions> leaves = {{.role = "coordinator", .name = "coordinator", .hosts = hosts},
                                       {.role = "admin", .name = "admin"}};
    for (int i = 0; i < workers; ++i) leaves.push_back({.role = "worker", .name = absl::StrCat("local-", i)});
    for (const LeafOptions& leaf : leaves) {
      if (absl::Status s = EnsureCertificate(tls_dir, leaf); !s.ok()) {
        std::fprintf(stderr, "loom up: cannot make the TLS certificates in %s: %s\n", tls_dir.c_str(),
                     std::string(s.message()).c_str());
        return 1;
      }
    }
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string coordinator_bin = FindBinary("loom-coordinator", "coordinator");
  const std::string worker_bin = FindBinary("loom-worker", "worker/daemon");
  std::vector<Child> children;
  children.push_back({"the coordinator",
                      {coordinator_bin, "--listen", listen, "--data-dir", data_dir + "/coordinator",
                       "--checkpoint-root", data_dir + "/checkpoints", "--prepared-data", prepared,
                       "--metrics-listen", metrics_listen}});
  const std::vector<std::string> coordinator_tls =
      insecure ? std::vector<std::string>{"--insecure"}
               : std::vector<std::string>{"--tls-dir", tls_dir, "--tls-name", "coordinator"};
  children.back().argv.insert(children.back().argv.end(), coordinator_tls.begin(), coordinator_tls.end());
  // Plan paths are confined to the coordinator's own directories (not <data-dir>/tls, which holds
  // the CA's key) and whatever --allowed-roots adds.
  if (!allowed_roots.empty()) children.back().argv.insert(children.back().argv.end(), {"--allowed-roots", allowed_roots});
  if (!plan_retention.empty()) {
    children.back().argv.insert(children.back().argv.end(), {"--plan-retention", plan_retention});
  }
  for (int i = 0; i < workers; ++i) {
    Child worker{absl::StrCat("worker local-", i),
                 {worker_bin, "--coordinator", listen, "--devices", absl::StrCat("cpu:", slots), "--threads-per-rank",
                  absl::StrCat(threads), "--work-dir", absl::StrCat(data_dir, "/worker-", i), "--worker-id",
                  absl::StrCat("local-", i), "--metrics-listen", "127.0.0.1:0"}};
    if (!insecure) {
      worker.argv.insert(worker.argv.end(), {"--tls-dir", tls_dir, "--tls-name", absl::StrCat("local-", i)});
    }
    if (!rank_binary.empty()) {
      worker.argv.push_back("--rank-binary");
      worker.argv.push_back(rank_binary);
    }
    children.push_back(std::move(worker));
  }
  for (Child& c : children) {
    if (!c.Start()) {
      for (Child& other : children) Stop(other.pid, std::chrono::seconds(5));
      return 1;
    }
  }
  std::printf(
      "loom up: coordinator on %s (metrics http://%s/metrics), %d workers; data in %s. Ctrl-C stops.\n",
      listen.c_str(), metrics_listen.c_str(), workers, data_dir.c_str());
  if (!insecure) {
    std::printf("loom up: mutual TLS; clients need: export LOOM_TLS_DIR=%s\n", tls_dir.c_str());
  }
  std::fflush(stdout);

  // Supervise: a child that ends is restarted after a backoff, as a service manager would; one
  // that keeps failing at start (a busy port, a bad flag) stops everything.
  int result = 0;
  while (result == 0) {
    auto now = Clock::now();
    auto next = now + std::chrono::hours(1);
    for (const Child& c : children) {
      if (c.pid < 0) next = std::min(next, c.restart_at);
    }
    const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(std::max(next - now, Clock::duration(0)));
    timespec timeout{static_cast<time_t>(wait.count() / 1000000000), static_cast<long>(wait.count() % 1000000000)};
    siginfo_t info;
    const int signal = sigtimedwait(&signals, &info, &timeout);
    if (signal == SIGINT || signal == SIGTERM) break;
    if (signal == SIGCHLD) {
      int status;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (Child& c : children) {
          if (c.pid == pid && !c.Ended(status)) result = 1;
        }
      }
    }
    now = Clock::now();
    for (Child& c : children) {
      if (result == 0 && c.pid < 0 && now >= c.restart_at && !c.Start()) result = 1;
    }
  }
  std::printf("loom up: stopping\n");
  std::fflush(stdout);
  // Workers first, so their ranks end cleanly, then the coordinator.
  for (size_t i = 1; i < children.size(); ++i) {
    if (children[i].pid > 0) kill(children[i].pid, SIGTERM);
  }
  for (size_t i = 1; i < children.size(); ++i) Stop(children[i].pid, std::chrono::seconds(5));
  Stop(children[0].pid, std::chrono::seconds(5));
  return result;
}

}  // namespace loom::cli
