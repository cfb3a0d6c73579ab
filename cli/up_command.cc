// `loom up`: the embedded default. A coordinator and N local CPU workers as child processes in
// the foreground; Ctrl-C or SIGTERM stops them all (workers first, so their ranks end cleanly).
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

extern char** environ;

namespace loom::cli {
namespace {

// `name` beside this executable, or where the build tree puts it, or on PATH.
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

}  // namespace

int RunUp(const Args& args) {
  int workers = 2, slots = 1, threads = 1;
  std::string data_dir, prepared, listen = "127.0.0.1:7070", metrics_listen = "127.0.0.1:9400", rank_binary;
  CommandLine cl("loom up",
                 "Runs Loom on this machine in the foreground: a coordinator and N CPU workers. Ctrl-C stops "
                 "them all.");
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
  cl.AddEpilog(
      "example:\n  loom up --workers 2 --data-dir /tmp/loom &\n  loom submit examples/plans/demo.yaml");
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

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const std::string coordinator_bin = FindBinary("loom-coordinator", "coordinator");
  const std::string worker_bin = FindBinary("loom-worker", "worker/daemon");
  const pid_t coordinator = Spawn({coordinator_bin, "--listen", listen, "--data-dir",
                                   data_dir + "/coordinator", "--checkpoint-root", data_dir + "/checkpoints",
                                   "--prepared-data", prepared, "--metrics-listen", metrics_listen});
  if (coordinator < 0) return 1;
  std::vector<pid_t> worker_pids;
  for (int i = 0; i < workers; ++i) {
    std::vector<std::string> argv = {worker_bin,
                                     "--coordinator",
                                     listen,
                                     "--devices",
                                     absl::StrCat("cpu:", slots),
                                     "--threads-per-rank",
                                     absl::StrCat(threads),
                                     "--work-dir",
                                     absl::StrCat(data_dir, "/worker-", i),
                                     "--worker-id",
                                     absl::StrCat("local-", i)};
    if (!rank_binary.empty()) {
      argv.push_back("--rank-binary");
      argv.push_back(rank_binary);
    }
    worker_pids.push_back(Spawn(argv));
  }
  std::printf(
      "loom up: coordinator on %s (metrics http://%s/metrics), %d workers; data in %s. Ctrl-C stops.\n",
      listen.c_str(), metrics_listen.c_str(), workers, data_dir.c_str());
  std::fflush(stdout);

  int result = 0;
  while (true) {
    int signal = 0;
    sigwait(&signals, &signal);
    if (signal != SIGCHLD) break;
    // A child ended on its own: the coordinator ending is fatal; a worker is reported.
    int status;
    pid_t pid;
    bool coordinator_died = false;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid == coordinator) {
        coordinator_died = true;
      } else {
        for (pid_t& w : worker_pids) {
          if (w == pid) {
            std::fprintf(stderr, "loom up: a worker (pid %d) exited\n", pid);
            w = -1;
          }
        }
      }
    }
    if (coordinator_died) {
      std::fprintf(stderr, "loom up: the coordinator exited; stopping the workers\n");
      result = 1;
      for (pid_t w : worker_pids) Stop(w, std::chrono::seconds(5));
      return result;
    }
  }
  std::printf("loom up: stopping\n");
  for (pid_t w : worker_pids) {
    if (w > 0) kill(w, SIGTERM);
  }
  for (pid_t w : worker_pids) Stop(w, std::chrono::seconds(5));
  Stop(coordinator, std::chrono::seconds(5));
  return result;
}

}  // namespace loom::cli
