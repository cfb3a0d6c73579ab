// Coordinator CPU with N simulated workers heartbeating once a second: a real loom-coordinator
// process; N simulated worker daemons in this process speaking the real protocol (sim_workers.h);
// the coordinator's CPU time from /proc/<pid>/stat over a 10 s window after every worker
// registered and the heartbeats settled. The goal is the issues': under 10% of one core at
// 1,000 workers (issue 5) and at 10,000 (the scale issue: Llama 3 trained on 16,384 GPUs, 2,048
// hosts of 8; 10,000 workers is a cluster of that order with room to spare).
//
// Connections: one TCP connection per simulated worker by default, because in a cluster every
// worker daemon is its own host and dials the coordinator on its own connection, so the
// coordinator reads each heartbeat from its own socket. The bench first used 10 connections
// carrying 100 streams each (`--connections 10` measures that layout again), which was cheaper
// for a coordinator that served each stream on a thread of its own. One connection per worker
// needs N open files in this process and N in the coordinator: the bench raises RLIMIT_NOFILE
// (the coordinator inherits it) and says so when the hard limit is too low.
//
// The peer figure is the machine's floor: a raw epoll TCP server (a child process, no gRPC, no
// HTTP/2, no protobuf) on the same number of connections, reading the same 25-byte message per
// connection per second; and the same server answering each with 26 bytes, as gRPC 1.51 (Debian's)
// does: after every message a stream reads, it sends a WINDOW_UPDATE for the stream and one for
// the connection. No server on this machine can do the reads for less.
//
// "Today" is the figure of the coordinator before the scale work (commit 1fbe804), measured by
// this bench on the development machine and recorded below; `--today PATH` measures another
// coordinator binary in the same run instead (e.g. one built from that commit), the fairer
// comparison on a noisy machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdio>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/coordinator/sim_workers.h"
#include "common/command_line.h"

namespace {

using loom::bench::Clock;
using loom::bench::CoordinatorProcess;
using loom::bench::SimCluster;

// Coordinator CPU (% of one core) at commit 1fbe804 with one connection per worker, by number of
// workers: the median of three runs of this bench on the 2-core development machine, 2026-12-04
// (1,000: 16.1-19.0; 10,000: 114.5-118.7; bench/README.md).
const std::map<int, double> kToday = {{0, 0.1}, {1000, 18.1}, {10000, 115.5}};

struct Result {
  double percent = -1;
  loom::bench::CpuTimes cpu;  // per second of the window
  double register_s = 0;      // time to register every worker
  std::string note;           // "(1000 listed idle, ...)" or what went wrong
  bool ok = false;
};

Result Measure(const std::string& binary, int workers, int connections, int window_s) {
  Result r;
  CoordinatorProcess coordinator(binary);
  if (!coordinator.ok()) {
    r.note = "(the coordinator did not start)";
    return r;
  }
  SimCluster sim({.coordinator = coordinator.address(), .workers = workers, .connections = connections});
  sim.StartHeartbeats();  // registering 10,000 workers takes longer than the heartbeat timeout
  const auto registering = Clock::now();
  if (const std::string error = sim.Connect(); !error.empty()) {
    r.note = "(" + error + ")";
    return r;
  }
  r.register_s = std::chrono::duration<double>(Clock::now() - registering).count();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // settle: every worker heartbeated twice
  const pid_t pid = coordinator.pid();
  const loom::bench::CpuTimes cpu0 = loom::bench::ProcessCpu(pid);
  const int64_t beats0 = sim.beats();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(window_s));
  const loom::bench::CpuTimes cpu = loom::bench::ProcessCpu(pid) - cpu0;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t beats = sim.beats() - beats0;

  // Every worker must still be listed and idle: a coordinator that fell behind on heartbeats
  // would have lost some (the timeout is 5 s).
  loom::v1::ListWorkersResponse listed;
  {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(coordinator.address(), grpc::InsecureChannelCredentials(), args);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status s = loom::v1::PlanService::NewStub(channel)->ListWorkers(
        &context, loom::v1::ListWorkersRequest(), &listed);
    if (!s.ok()) {
      r.note = "(ListWorkers failed: " + s.error_message() + ")";
      return r;
    }
  }
  int idle = 0, lost = 0;
  for (const loom::v1::WorkerStatus& w : listed.workers()) {
    idle += w.state() == loom::v1::WORKER_STATE_IDLE;
    lost += w.state() == loom::v1::WORKER_STATE_LOST;
  }
  sim.StopHeartbeats();
  r.cpu = {cpu.user / wall, cpu.system / wall};
  r.percent = 100 * cpu.total() / wall;
  r.note = absl::StrFormat(
      "(user %.1f%% + system %.1f%%; %d listed idle, %d lost; %.0f heartbeats/s%s; registered in %.1f s%s)",
      100 * r.cpu.user, 100 * r.cpu.system, idle, lost, beats / wall,
      sim.datagrams() ? " as UDP datagrams, a full one on the stream every 30th" : " on the streams", r.register_s,
      sim.storage_token_sent() ? "" : "; GetStorage unimplemented, no token sent");
  r.ok = idle == workers && lost == 0 && sim.ended() == 0;
  if (!r.ok) r.note += " FAILED: workers were lost " + sim.first_error();
  return r;
}

// The machine's floor (see the header): CPU of a raw epoll server (% of one core) reading one
// 25-byte message a second on each of `connections` loopback connections, and answering each
// with 26 bytes when `reply`.
double Floor(int connections, bool reply, int window_s) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener, 4096) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(listener);
    return -1;
  }
  std::vector<epoll_event> events(256);  // allocated before the fork: the child only makes syscalls
  const pid_t server = fork();
  if (server == 0) {
    const int ep = epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = listener;
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    char buffer[4096];
    const char answer[26] = {};
    while (true) {
      const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
      for (int i = 0; i < n; ++i) {
        const int fd = events[static_cast<size_t>(i)].data.fd;
        if (fd == listener) {
          const int c = accept(listener, nullptr, nullptr);
          const int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event e{};
          e.events = EPOLLIN;
          e.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        } else if (read(fd, buffer, sizeof buffer) <= 0) {
          close(fd);
        } else if (reply && write(fd, answer, sizeof answer) < 0) {
          close(fd);
        }
      }
    }
  }
  close(listener);
  std::vector<int> fds;
  for (int i = 0; i < connections; ++i) {
    const int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) break;
    const int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fds.push_back(c);
  }
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    const int ep = epoll_create1(0);
    for (int c : fds) {
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.fd = c;
      epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
    }
    std::vector<epoll_event> ready(256);
    char buffer[4096];
    while (!stop) {
      const int n = epoll_wait(ep, ready.data(), static_cast<int>(ready.size()), 100);
      for (int i = 0; i < n; ++i) {
        if (read(ready[static_cast<size_t>(i)].data.fd, buffer, sizeof buffer) < 0) continue;
      }
    }
    close(ep);
  });
  std::thread beat([&] {
    const char message[25] = {};
    const int n = static_cast<int>(fds.size());
    while (!stop) {
      const auto second = Clock::now();
      for (int i = 0; i < n && !stop; ++i) {
        std::this_thread::sleep_until(second + std::chrono::microseconds(1'000'000LL * i / n));
        if (write(fds[static_cast<size_t>(i)], message, sizeof message) < 0) continue;
      }
      std::this_thread::sleep_until(second + std::chrono::seconds(1));
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double cpu0 = loom::bench::CpuSeconds(server);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(window_s));
  const double cpu = loom::bench::CpuSeconds(server) - cpu0;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  beat.join();
  drain.join();
  for (int c : fds) close(c);
  kill(server, SIGKILL);
  waitpid(server, nullptr, 0);
  return static_cast<int>(fds.size()) == connections ? 100 * cpu / wall : -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string workers_list = "0,1000,10000";
  int connections = 0;
  int window_s = 10;
  bool floor = true;
  std::string binary = loom::testing::CoordinatorBinary();
  std::string today_binary;
  loom::CommandLine cl("bench_coordinator_heartbeat",
                       "Coordinator CPU with simulated workers heartbeating once a second (a real "
                       "loom-coordinator process; the workers speak the real protocol from this process), "
                       "beside the machine's floor for the same reads.");
  cl.AddFlag("workers", &workers_list, "comma-separated numbers of simulated workers to measure");
  cl.AddFlag("connections", &connections,
             "TCP connections the workers' streams share (0: one per worker, as in a cluster)");
  cl.AddFlag("window", &window_s, "seconds over which CPU time is measured");
  cl.AddFlag("floor", &floor, "also measure the machine's floor (a raw epoll server on as many connections)");
  cl.AddFlag("coordinator", &binary, "the loom-coordinator binary to measure");
  cl.AddFlag("today", &today_binary,
             "another loom-coordinator binary (e.g. built from commit 1fbe804) to measure in the same run "
             "for the 'today' figure; default: the figures recorded in the bench");
  cl.AddEpilog("example:\n  build/bench/coordinator/bench_coordinator_heartbeat --workers 1000,10000");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  std::vector<int> counts;
  for (absl::string_view part : absl::StrSplit(workers_list, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 0) {
      std::fprintf(stderr, "--workers: '%s' is not a number of workers; e.g. --workers 1000,10000\n",
                   std::string(part).c_str());
      return 2;
    }
    counts.push_back(n);
  }
  if (connections < 0) {
    std::fprintf(stderr, "--connections: %d is negative; 0 means one per worker\n", connections);
    return 2;
  }
  int most = 0;
  for (int n : counts) most = std::max(most, n);
  // This process holds one end of each connection, the coordinator (or the floor's server) the other.
  if (!loom::bench::RaiseFileLimit(static_cast<rlim_t>(most) + 1024)) return 1;

  bool failed = false;
  for (int n : counts) {
    const int conns = connections > 0 ? std::min(connections, std::max(1, n)) : std::max(1, n);
    const Result now = Measure(binary, n, conns, window_s);
    std::optional<Result> today;
    if (!today_binary.empty()) today = Measure(today_binary, n, conns, window_s);
    std::string today_text;
    if (today.has_value()) {
      today_text = today->ok ? absl::StrFormat("; today %.2f%%", today->percent)
                             : absl::StrFormat("; today %.2f%% and FAILED", today->percent);
    } else if (connections == 0 && kToday.contains(n)) {
      today_text = absl::StrFormat("; today %.2f%%", kToday.at(n));
    }
    std::printf(
        "%5d workers over %5d connections, heartbeating 1/s: coordinator CPU %6.2f%% of one core %s  (goal < "
        "10%%; ratio %.2f%s)\n",
        n, n == 0 ? 0 : conns, now.percent, now.note.c_str(), now.percent / 10.0, today_text.c_str());
    if (today.has_value()) std::printf("      today's coordinator: %s\n", today->note.c_str());
    if (floor && n > 0) {
      const double read_only = Floor(conns, false, window_s);
      const double with_reply = Floor(conns, true, window_s);
      std::printf(
          "%5d connections, raw epoll server (the machine's floor): %6.2f%% of one core reading a message a "
          "second on each, %6.2f%% answering each with 26 bytes as gRPC 1.51 does\n",
          conns, read_only, with_reply);
    }
    std::fflush(stdout);
    failed |= !now.ok;
  }
  return failed ? 1 : 0;
}
