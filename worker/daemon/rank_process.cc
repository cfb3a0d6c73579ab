#include "worker/daemon/rank_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string_view>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "worker/rank_protocol.h"

extern char** environ;

namespace loom::worker {
namespace {

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The fd number the rank sees LOOM_REPORT_FD at (above stdio; fixed so the environment can be
// prepared before fork).
constexpr int kChildReportFd = 3;

}  // namespace

std::string LastNonEmptyLine(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff start = std::max<std::streamoff>(0, size - 8192);
  in.seekg(start);
  std::string tail(static_cast<size_t>(size - start), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  size_t end = tail.size();
  while (end > 0) {
    const size_t nl = tail.rfind('\n', end - 1);
    const size_t begin = nl == std::string::npos ? 0 : nl + 1;
    std::string line = tail.substr(begin, end - begin);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\n'))
      line.pop_back();
    if (!line.empty()) return line;
    if (nl == std::string::npos) break;
    end = nl;
  }
  return "";
}

RankProcess::RankProcess(RankProcessOptions options, MessageFn on_message, ExitFn on_exit)
    : options_(std::move(options)), on_message_(std::move(on_message)), on_exit_(std::move(on_exit)) {}

absl::StatusOr<std::unique_ptr<RankProcess>> RankProcess::Start(RankProcessOptions options,
                                                                MessageFn on_message, ExitFn on_exit) {
  std::unique_ptr<RankProcess> p(
      new RankProcess(std::move(options), std::move(on_message), std::move(on_exit)));
  if (access(p->options_.binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat("rank binary ", p->options_.binary, " is not executable: ", std::strerror(errno)));
  }
  const int log_fd = open(p->options_.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0)
    return absl::InternalError(
        absl::StrCat("cannot open ", p->options_.log_path, ": ", std::strerror(errno)));
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  // Everything the child needs is prepared before fork: after it only async-signal-safe calls.
  std::vector<std::string> env_strings;
  // The inherited environment, less what options_.env sets (getenv would find the first).
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::string_view key = entry.substr(0, entry.find('=') + 1);
    bool overridden = key == "LOOM_REPORT_FD=";
    for (const std::string& x : p->options_.env) overridden |= std::string_view(x).substr(0, x.find('=') + 1) == key;
    if (!overridden) env_strings.emplace_back(entry);
  }
  for (const std::string& e : p->options_.env) env_strings.push_back(e);
  env_strings.push_back(absl::StrCat(kReportFdEnv, "=", kChildReportFd));
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string arg0 = p->options_.binary, arg1 = "--assignment", arg2 = p->options_.assignment_path;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);  // the daemon died between fork and prctl
    setpgid(0, 0);
    // Default signal dispositions and mask for the rank (the daemon blocks SIGTERM/SIGINT).
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(fds[1], kChildReportFd);  // dup2 clears FD_CLOEXEC on the new descriptor
    execve(argv[0], argv, envp.data());
    const char msg[] = "loom-worker: exec of the rank binary failed\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(127);
  }
  close(log_fd);
  close(fds[1]);
  p->pid_ = pid;
  p->read_fd_ = fds[0];
  RankProcess* self = p.get();
  p->reader_ = std::thread([self] {
    RankMessageReader reader(self->read_fd_);
    while (true) {
      absl::StatusOr<std::optional<loom::v1::WorkerMessage>> m = reader.Next();
      if (!m.ok()) {
        Log(LogLevel::kWarning, "worker", RankName(self->options_.rank), ": ", m.status().message());
        break;
      }
      if (!m->has_value()) break;
      self->on_message_(**m);
    }
  });
  p->reaper_ = std::thread([self] { self->Reap(); });
  return p;
}

void RankProcess::Reap() {
  int status = 0;
  bool killed = false;
  while (true) {
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) break;
    const int64_t kill_at_ms = kill_at_ms_;
    if (kill_at_ms != 0 && !killed && pid_ > 0 && SteadyMs() >= kill_at_ms) {
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The rank's end of the pipe is closed now; deliver what it wrote before its exit.
  if (reader_.joinable()) reader_.join();
  loom::v1::RankExit exit;
  *exit.mutable_rank() = options_.rank;
  if (WIFEXITED(status)) {
    exit.set_exit_code(WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    exit.set_exit_code(-WTERMSIG(status));
  } else {
    exit.set_exit_code(-1);
  }
  if (exit.exit_code() != 0) exit.set_error(LastNonEmptyLine(options_.log_path));
  exited_ = true;
  on_exit_(exit);
}

void RankProcess::Abort(absl::Duration grace) {
  // Never signal without a child: kill(-(-1)) and kill(-1) would reach every process we may signal.
  if (pid_ <= 0 || exited_) return;
  int64_t expected = 0;
  if (kill_at_ms_.compare_exchange_strong(expected, SteadyMs() + absl::ToInt64Milliseconds(grace))) {
    kill(-pid_, SIGTERM);
    kill(pid_, SIGTERM);
  }
}

void RankProcess::Signal(int signal) {
  if (pid_ > 0 && !exited_) kill(pid_, signal);
}

RankProcess::~RankProcess() {
  Abort();
  if (reaper_.joinable()) reaper_.join();
  if (reader_.joinable()) reader_.join();
}

}  // namespace loom::worker
