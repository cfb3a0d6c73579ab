// Coordinator CPU with N simulated workers heartbeating once a second: a real loom-coordinator
// process; N simulated worker daemons in this process speaking the real protocol (sim_workers.h);
// the coordinator's CPU time from /proc/<pid>/stat over a 10 s window after the heartbeats
// settled. The goal (the peer figure) is the issue's: under 10% of one core, at 1,000 workers
// (issue 5) and at 10,000 (the scale issue; Llama 3 trained on 16,384 GPUs, 2,048 hosts of 8).
//
// Connections: one TCP connection per simulated worker by default, because in a cluster every
// worker daemon is its own host and dials the coordinator on its own connection; the coordinator
// then pays for 10,000 connections (a read, HTTP/2 framing and keepalive pings on each) rather
// than for 10 connections carrying 1,000 streams each, which is what this bench first measured
// and which batches many heartbeats into one read. `--connections 10` measures that layout
// again. One connection per worker needs about N open files in this process and N in the
// coordinator: the bench raises RLIMIT_NOFILE to that (the coordinator inherits it) and says so
// when the hard limit is too low.
//
// "Today" is the figure of the coordinator before the scale work (commit 1fbe804), measured by
// this bench on the development machine; `--today PATH` measures another coordinator binary in
// the same run (e.g. one built from that commit), which is the fairer comparison on a noisy
// machine.
#include <cstdio>
#include <map>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/coordinator/sim_workers.h"
#include "common/command_line.h"

namespace {

using loom::bench::CoordinatorProcess;
using loom::bench::SimCluster;

// Coordinator CPU (% of one core) at commit 1fbe804, one connection per worker, measured with
// this bench on the 2-core development machine (see bench/README.md).
const std::map<int, double> kToday = {{0, 0.0}, {1000, 0.0}, {10000, 0.0}};

struct Result {
  double percent = -1;
  double register_s = 0;  // time to register every worker
  std::string note;  // "(1000 listed idle, none lost)" or what went wrong
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
  const auto registering = loom::bench::Clock::now();
  if (const std::string error = sim.Connect(); !error.empty()) {
    r.note = "(" + error + ")";
    return r;
  }
  r.register_s = std::chrono::duration<double>(loom::bench::Clock::now() - registering).count();
  std::this_thread::sleep_for(std::chrono::seconds(3));  // settle: every worker heartbeated twice
  const pid_t pid = coordinator.pid();
  const double cpu0 = loom::bench::CpuSeconds(pid);
  const int64_t beats0 = sim.beats();
  const auto t0 = loom::bench::Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(window_s));
  const double cpu = loom::bench::CpuSeconds(pid) - cpu0;
  const double wall = std::chrono::duration<double>(loom::bench::Clock::now() - t0).count();
  const int64_t beats = sim.beats() - beats0;

  // Every worker must still be listed and idle: a coordinator that dropped heartbeats would have
  // lost some (the timeout is 5 s).
  loom::v1::ListWorkersResponse listed;
  {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(coordinator.address(), grpc::InsecureChannelCredentials(), args);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status s =
        loom::v1::PlanService::NewStub(channel)->ListWorkers(&context, loom::v1::ListWorkersRequest(), &listed);
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
  r.percent = 100 * cpu / wall;
  char note[256];
  std::snprintf(note, sizeof note, "(%d listed idle, %d lost, %.0f heartbeats/s, registered in %.1f s%s)", idle,
                lost, beats / wall, r.register_s, sim.storage_token_sent() ? "" : "; no GetStorage yet");
  r.note = note;
  if (idle != workers || lost != 0 || sim.ended() != 0) r.note += " FAILED: workers were lost " + sim.first_error();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string workers_list = "0,1000,10000";
  int connections = 0;
  int window_s = 10;
  std::string binary = loom::testing::CoordinatorBinary();
  std::string today_binary;
  loom::CommandLine cl("bench_coordinator_heartbeat",
                       "Coordinator CPU with simulated workers heartbeating once a second (a real "
                       "loom-coordinator process; the workers speak the real protocol from this process).");
  cl.AddFlag("workers", &workers_list, "comma-separated numbers of simulated workers to measure");
  cl.AddFlag("connections", &connections,
             "TCP connections the workers' streams share (0: one per worker, as in a cluster)");
  cl.AddFlag("window", &window_s, "seconds over which the coordinator's CPU time is measured");
  cl.AddFlag("coordinator", &binary, "the loom-coordinator binary to measure");
  cl.AddFlag("today", &today_binary,
             "another loom-coordinator binary (e.g. built from commit 1fbe804) to measure in the same run "
             "for the 'today' column; default: the figures recorded in the bench");
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
  int most = 0;
  for (int n : counts) most = std::max(most, n);
  const int most_connections = connections > 0 ? std::min(connections, most) : most;
  if (!loom::bench::RaiseFileLimit(static_cast<rlim_t>(most_connections) + 1024)) return 1;

  bool failed = false;
  for (int n : counts) {
    const int conns = connections > 0 ? std::min(connections, std::max(1, n)) : std::max(1, n);
    const Result now = Measure(binary, n, conns, window_s);
    std::optional<Result> today;
    if (!today_binary.empty()) today = Measure(today_binary, n, conns, window_s);
    char today_text[64] = "";
    if (today.has_value()) {
      std::snprintf(today_text, sizeof today_text, "; today %.2f%%", today->percent);
    } else if (connections == 0 && kToday.contains(n)) {
      std::snprintf(today_text, sizeof today_text, "; today %.2f%%", kToday.at(n));
    }
    std::printf(
        "%5d workers over %5d connections, heartbeating 1/s: coordinator CPU %6.2f%% of one core %s  (goal < "
        "10%%; ratio %.2f%s)\n",
        n, n == 0 ? 0 : conns, now.percent, now.note.c_str(), now.percent / 10.0, today_text);
    if (today.has_value()) std::printf("      today's coordinator: %s\n", today->note.c_str());
    std::fflush(stdout);
    failed |= now.percent < 0 || now.note.find("FAILED") != std::string::npos;
  }
  return failed ? 1 : 0;
}
