// Recovery and start-up latency of the control plane, with the default heartbeat settings
// (1 s, timeout 5 s), real processes on 127.0.0.1 and the fake rank (so "checkpoint load" is a
// manifest read, and a step is LOOM_FAKE_STEP_MS = 20 ms):
//   submit -> first step            submit, placement, rank start, first step
//   worker SIGKILL -> first step    detection (stream closed), rescheduling, rank start + first step
//   worker SIGSTOP -> first step    the same when the worker hangs: detection by heartbeat timeout
// and, where test hosts can be made (root; tests/hosts/test_hosts.h), the same across hosts: the
// coordinator on host 0, the workers on hosts 1 and 2, and
//   host kill -> first step         SIGKILL of every process on the victim's host
//   link cut -> first step          the victim's host's link down (heartbeats stop arriving)
// printed beside their loopback peers (worker SIGKILL, worker SIGSTOP) with the ratio.
// The goal: recovery excluding checkpoint load under 3 s.
#include <signal.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/command_line.h"
#include "tests/hosts/test_hosts.h"
#include "tests/integration/cluster_harness.h"

namespace {

using loom::testing::Cluster;
using loom::v1::PlanStatus;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Time of the first step the rank logged (third column of losses.txt), or -1.
int64_t FirstStepMs(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return -1;
  std::istringstream f(line);
  int64_t step, ms;
  double loss;
  return f >> step >> loss >> ms ? ms : -1;
}

int64_t TransitionMs(const loom::v1::JobStatus& job, loom::v1::JobState to, int attempt) {
  for (const auto& t : job.transitions()) {
    if (t.to_state() == to && t.attempt() == attempt) return t.time_ms();
  }
  return -1;
}

std::string FindRankFile(Cluster& c, const std::vector<std::string>& workers, const std::string& rel) {
  for (const std::string& w : workers) {
    const std::string p = c.work_dir(w) + "/" + rel;
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

enum class Failure { kWorkerKill, kWorkerStop, kHostKill, kLinkCut };

const char* Label(Failure f) {
  switch (f) {
    case Failure::kWorkerKill: return "worker SIGKILL";
    case Failure::kWorkerStop: return "worker SIGSTOP";
    case Failure::kHostKill: return "host kill";
    case Failure::kLinkCut: return "link cut";
  }
  return "";
}

// Failure -> the first step of attempt 2, in ms (-1 when it did not recover). `hosts`: the workers
// on hosts 1 and 2 (and the coordinator on host 0), else all on 127.0.0.1.
int64_t Recovery(Failure failure, loom::testing::TestHosts* hosts) {
  Cluster c({.heartbeat = "1s", .heartbeat_timeout = "5s", .worker_env = {"LOOM_FAKE_STEP_MS=20"}, .hosts = hosts});
  c.StartCoordinator();
  c.StartWorker("w1", 2, {}, hosts != nullptr ? 1 : 0);
  c.StartWorker("w2", 2, {}, hosts != nullptr ? 2 : 0);
  // A long first stage: 200 steps, a checkpoint every 5.
  const std::string plan = c.dir() + "/plan.yaml";
  std::string text =
      loom::testing::ReadAll(loom::testing::SourcePath("tests/integration/two_stage_plan.yaml"));
  text.replace(text.find("tokens: 5120"), 12, "tokens: 51200");
  std::ofstream(plan) << text;
  const int64_t submit_ms = NowMs();
  const std::string id = c.Submit(plan);
  PlanStatus s =
      c.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 10; });
  const std::string first = FindRankFile(c, {"w1", "w2"}, id + "/core#1/rank0/losses.txt");
  if (failure == Failure::kWorkerKill) {
    const int64_t placed = TransitionMs(s.jobs(0), loom::v1::JOB_STATE_SCHEDULED, 1);
    std::printf(
        "submit -> first step: %5lld ms  (submit->placed %lld, placed->first step %lld incl. one %d ms "
        "step)\n",
        static_cast<long long>(FirstStepMs(first) - submit_ms), static_cast<long long>(placed - submit_ms),
        static_cast<long long>(FirstStepMs(first) - placed), 20);
  }
  const std::string victim = s.jobs(0).rank_workers(0);
  const std::string survivor = victim == "w1" ? "w2" : "w1";
  const int victim_host = victim == "w1" ? 1 : 2;
  const int64_t kill_ms = NowMs();
  switch (failure) {
    case Failure::kWorkerKill: c.KillWorker(victim, SIGKILL); break;
    case Failure::kWorkerStop: kill(c.worker(victim)->pid(), SIGSTOP); break;
    case Failure::kHostKill: hosts->Kill(victim_host); break;
    case Failure::kLinkCut: hosts->SetLink(victim_host, false); break;
  }
  s = c.WaitForPlan(
      id, [](const PlanStatus& s) { return s.jobs(0).attempt() >= 2 && s.jobs(0).progress().step() > 0; },
      std::chrono::seconds(30));
  const std::string second = c.work_dir(survivor) + "/" + id + "/core#2/rank0/losses.txt";
  const int64_t detected = TransitionMs(s.jobs(0), loom::v1::JOB_STATE_RECOVERING, 1);
  const int64_t placed = TransitionMs(s.jobs(0), loom::v1::JOB_STATE_SCHEDULED, 2);
  const int64_t stepped = FirstStepMs(second);
  const int64_t total = stepped < 0 ? -1 : stepped - kill_ms;
  std::printf(
      "%-14s -> first step of attempt 2: %5lld ms = detection %lld + rescheduling %lld + rank start, "
      "checkpoint load and first step %lld  (goal excl. load: < 3000 ms; ratio %.2f)\n",
      Label(failure), static_cast<long long>(total), static_cast<long long>(detected - kill_ms),
      static_cast<long long>(placed - detected), static_cast<long long>(stepped - placed), total / 3000.0);
  if (failure == Failure::kWorkerStop) kill(c.worker(victim)->pid(), SIGCONT);
  if (failure == Failure::kLinkCut) hosts->SetLink(victim_host, true);
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  loom::CommandLine cl("bench_coordinator_recovery",
                       "Control-plane latencies on real processes: submit -> first step, and a worker "
                       "SIGKILLed or SIGSTOPped -> the first step of the next attempt; as root, also a "
                       "host killed and a host's link cut on test hosts (network namespaces), beside "
                       "their loopback peers.");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  const int64_t crash = Recovery(Failure::kWorkerKill, nullptr);
  const int64_t hang = Recovery(Failure::kWorkerStop, nullptr);
  std::string why;
  if (!loom::testing::TestHosts::Available(&why)) {
    std::printf("across hosts: skipped (%s)\n", why.c_str());
    return 0;
  }
  loom::testing::TestHosts hosts(3);
  if (hosts.size() != 3) return 1;
  const int64_t host_kill = Recovery(Failure::kHostKill, &hosts);
  const int64_t link_cut = Recovery(Failure::kLinkCut, &hosts);
  std::printf("across hosts / loopback: host kill %lld / worker SIGKILL %lld ms = %.2f; link cut %lld / worker "
              "SIGSTOP %lld ms = %.2f\n",
              static_cast<long long>(host_kill), static_cast<long long>(crash),
              static_cast<double>(host_kill) / crash, static_cast<long long>(link_cut),
              static_cast<long long>(hang), static_cast<double>(link_cut) / hang);
  return 0;
}
