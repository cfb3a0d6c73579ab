// The cost of mutual TLS on the control plane, each figure beside the same measurement without
// TLS in the same run (real loom-coordinator processes on 127.0.0.1):
//
// 1. submit -> status latency: SubmitPlan of a tiny valid plan (validated and queued: no worker
//    is registered, so nothing trains) and then GetPlan of the id it returned, p50/p99 over N
//    plans. Twice: on one held connection (what the Python client or a script that reuses its
//    channel pays: TLS records on an open connection), and on a new connection per plan (what
//    each `loom submit` / `loom status` process pays: TCP and TLS handshakes before the calls).
//    The TLS and plain coordinators run side by side and the plans alternate between them, so
//    noise on this machine lands on both. The plans are split into --rounds rounds; each round's
//    TLS/plain ratio of p50s is printed, then their median with the lowest and highest, so one
//    noisy stretch shows as one outlying round instead of moving the figure. Each line also gives
//    the CPU per submit -> status of the client (this process, or the `loom` processes) and of
//    the coordinator: where the time goes, whatever the machine's other load. With --pin (the
//    default) both coordinators share the last CPU and this process the others, so the other
//    load of the machine falls on both coordinators alike.
// 2. the coordinator's CPU with 1,000 simulated workers heartbeating once a second
//    (bench/coordinator/sim_workers.h: one TCP connection per worker, as in a cluster), with and
//    without TLS. loom-worker heartbeats with UDP datagrams (common/heartbeat_datagram.h), which
//    TLS does not cover, and sends a full heartbeat on its gRPC Connect stream every 30th beat;
//    so this is measured twice: as loom-worker does it, and with every heartbeat on the stream
//    (the gRPC stream's cost, which TLS does touch: every message is a TLS record).
//
// The goal (issue 19) is under 5% overhead.
#include <sched.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/coordinator/sim_workers.h"
#include "common/command_line.h"
#include "common/tls_certs.h"

namespace {

using loom::bench::Clock;
using loom::bench::CoordinatorProcess;
using loom::bench::SimCluster;

std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& dir, const std::string& name) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = loom::testing::ReadAll(dir + "/ca.pem");
  o.pem_private_key = loom::testing::ReadAll(dir + "/" + name + ".key");
  o.pem_cert_chain = loom::testing::ReadAll(dir + "/" + name + ".pem");
  return grpc::SslCredentials(o);
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// One endpoint's measurements in one round.
struct Latencies {
  std::vector<double> ms;          // wall time of each submit -> status (or process pair)
  std::vector<double> client_cpu;  // client CPU of each, milliseconds
};

// CPU time this process has used so far, all threads, in milliseconds (not tick-rounded).
double OwnCpuMs() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) / 1e6;
}

// CPU time of the waited-for child processes (the `loom` processes), milliseconds.
double ChildrenCpuMs() {
  rusage r{};
  getrusage(RUSAGE_CHILDREN, &r);
  auto ms = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) / 1e3; };
  return ms(r.ru_utime) + ms(r.ru_stime);
}

// One submit -> status on `stub`; milliseconds, or -1 with `error` set.
double SubmitThenStatus(loom::v1::PlanService::Stub* stub, const std::string& plan_yaml, std::string* error) {
  const auto t0 = Clock::now();
  loom::v1::SubmitPlanRequest submit;
  submit.set_plan_yaml(plan_yaml);
  submit.set_source("bench-tls.yaml");
  loom::v1::SubmitPlanResponse submitted;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    const grpc::Status s = stub->SubmitPlan(&context, submit, &submitted);
    if (!s.ok()) {
      *error = "SubmitPlan: " + s.error_message();
      return -1;
    }
  }
  loom::v1::GetPlanRequest get;
  get.set_plan_id(submitted.plan_id());
  loom::v1::GetPlanResponse status;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Status s = stub->GetPlan(&context, get, &status);
  if (!s.ok()) {
    *error = "GetPlan: " + s.error_message();
    return -1;
  }
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Endpoint {
  std::string address;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  pid_t pid = 0;          // the coordinator's, for its CPU time
  std::string cli_flags;  // extra `loom` flags for it
};

// A measurement over rounds: per endpoint, each round's samples, and the coordinator's CPU over
// all rounds (from /proc, 10 ms ticks: summed over every call, not per round).
struct Rounds {
  std::vector<std::vector<Latencies>> rounds;  // [round][endpoint]
  std::vector<double> server_cpu_ms;          // [endpoint], all rounds
  std::string error;
};

// `plans` submit -> status on each endpoint, alternating, in `rounds` rounds; `fresh`: a new
// connection per plan.
Rounds MeasureLatency(const std::vector<Endpoint>& endpoints, int plans, int rounds, bool fresh,
                      const std::string& plan_yaml) {
  Rounds out;
  out.server_cpu_ms.assign(endpoints.size(), 0);
  std::vector<std::unique_ptr<loom::v1::PlanService::Stub>> held;
  for (const Endpoint& e : endpoints) {
    held.push_back(loom::v1::PlanService::NewStub(grpc::CreateChannel(e.address, e.credentials)));
  }
  int64_t connection = 0;
  for (int round = 0; round < rounds && out.error.empty(); ++round) {
    const int n = plans / rounds + (round < plans % rounds ? 1 : 0);
    std::vector<Latencies> l(endpoints.size());
    std::vector<double> cpu0(endpoints.size());
    for (int i = round == 0 ? -5 : 0; i < n && out.error.empty(); ++i) {  // 5 warm-up plans each
      if (i == 0) {
        for (size_t k = 0; k < endpoints.size(); ++k) cpu0[k] = loom::bench::CpuSeconds(endpoints[k].pid) * 1e3;
      }
      for (size_t j = 0; j < endpoints.size(); ++j) {
        const size_t k = (j + static_cast<size_t>(i + 5)) % endpoints.size();  // who goes first alternates
        const double c0 = OwnCpuMs();
        std::unique_ptr<loom::v1::PlanService::Stub> own;
        loom::v1::PlanService::Stub* stub = held[k].get();
        if (fresh) {
          grpc::ChannelArguments args;
          args.SetInt("loom.bench.connection", static_cast<int>(++connection));  // its own connection
          own = loom::v1::PlanService::NewStub(
              grpc::CreateCustomChannel(endpoints[k].address, endpoints[k].credentials, args));
          stub = own.get();
        }
        const double ms = SubmitThenStatus(stub, plan_yaml, &out.error);
        own.reset();  // a new process would close its connection too
        if (ms < 0) break;
        if (i >= 0) {
          l[k].ms.push_back(ms);
          l[k].client_cpu.push_back(OwnCpuMs() - c0);
        }
      }
    }
    for (size_t k = 0; k < endpoints.size(); ++k) {
      out.server_cpu_ms[k] += loom::bench::CpuSeconds(endpoints[k].pid) * 1e3 - cpu0[k];
    }
    out.rounds.push_back(std::move(l));
  }
  return out;
}

// `plans` times `loom submit` then `loom status` as processes, alternating between the endpoints,
// in `rounds` rounds; wall and client CPU (both processes) of each pair.
Rounds MeasureCli(const std::string& loom, const std::vector<Endpoint>& endpoints, int plans, int rounds,
                  const std::string& plan_path, const std::string& dir) {
  Rounds out;
  out.server_cpu_ms.assign(endpoints.size(), 0);
  for (int round = 0; round < rounds && out.error.empty(); ++round) {
    const int n = plans / rounds + (round < plans % rounds ? 1 : 0);
    std::vector<Latencies> l(endpoints.size());
    std::vector<double> cpu0(endpoints.size());
    for (int i = round == 0 ? -2 : 0; i < n && out.error.empty(); ++i) {  // 2 warm-up pairs each
      if (i == 0) {
        for (size_t k = 0; k < endpoints.size(); ++k) cpu0[k] = loom::bench::CpuSeconds(endpoints[k].pid) * 1e3;
      }
      for (size_t j = 0; j < endpoints.size(); ++j) {
        const size_t k = (j + static_cast<size_t>(i + 2)) % endpoints.size();
        const std::string common =
            " --coordinator " + endpoints[k].address + " " + endpoints[k].cli_flags + " 2>" + dir + "/cli.err";
        const double c0 = ChildrenCpuMs();
        const auto t0 = Clock::now();
        if (std::system((loom + " submit " + plan_path + " --quiet" + common + " >" + dir + "/cli.out").c_str()) !=
            0) {
          out.error = "loom submit: " + loom::testing::ReadAll(dir + "/cli.err");
          break;
        }
        std::string id = loom::testing::ReadAll(dir + "/cli.out");
        while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
        if (std::system((loom + " status " + id + common + " >/dev/null").c_str()) != 0) {
          out.error = "loom status: " + loom::testing::ReadAll(dir + "/cli.err");
          break;
        }
        if (i >= 0) {
          l[k].ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
          l[k].client_cpu.push_back(ChildrenCpuMs() - c0);
        }
      }
    }
    for (size_t k = 0; k < endpoints.size(); ++k) {
      out.server_cpu_ms[k] += loom::bench::CpuSeconds(endpoints[k].pid) * 1e3 - cpu0[k];
    }
    out.rounds.push_back(std::move(l));
  }
  return out;
}

struct Cpu {
  double percent = -1;
  std::string note;
};

// Coordinator CPU (% of one core) over `window_s` with `workers` simulated workers, one connection
// each; TLS when `tls_dir` is set (every worker with its own certificate, sim-I).
Cpu MeasureHeartbeats(const std::string& binary, const std::string& tls_dir, int workers, bool datagrams,
                      int window_s) {
  Cpu r;
  std::vector<std::string> extra;
  if (!tls_dir.empty()) extra = {"--tls-dir", tls_dir, "--tls-name", "coordinator"};
  CoordinatorProcess coordinator(binary, extra);
  if (!coordinator.ok()) {
    r.note = "(the coordinator did not start)";
    return r;
  }
  loom::bench::SimOptions options{.coordinator = coordinator.address(), .workers = workers};
  options.datagrams = datagrams;
  if (!tls_dir.empty()) {
    options.credentials = [&](int c) { return Tls(tls_dir, "sim-" + std::to_string(c)); };
  }
  SimCluster sim(options);
  sim.StartHeartbeats();
  if (const std::string error = sim.Connect(); !error.empty()) {
    r.note = "(" + error + ")";
    return r;
  }
  std::this_thread::sleep_for(std::chrono::seconds(3));  // settle: every worker heartbeated twice
  const loom::bench::CpuTimes cpu0 = loom::bench::ProcessCpu(coordinator.pid());
  const int64_t beats0 = sim.beats();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(window_s));
  const loom::bench::CpuTimes cpu = loom::bench::ProcessCpu(coordinator.pid()) - cpu0;
  const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t beats = sim.beats() - beats0;
  sim.StopHeartbeats();
  r.percent = 100 * cpu.total() / wall;
  r.note = absl::StrFormat("(user %.1f%% + system %.1f%%; %.0f heartbeats/s%s%s)", 100 * cpu.user / wall,
                           100 * cpu.system / wall, beats / wall,
                           sim.datagrams() ? " as datagrams, every 30th on the stream" : " on the streams",
                           sim.ended() == 0 ? "" : ("; FAILED: streams ended: " + sim.first_error()).c_str());
  if (sim.ended() != 0) r.percent = -1;
  return r;
}

std::string Ratio(double tls, double plain) {
  if (tls < 0 || plain <= 0) return "n/a";
  return absl::StrFormat("%.3f (%+.1f%%)", tls / plain, 100 * (tls / plain - 1));
}

// Puts every thread of `pid` (and so those they start later) on `cpus`. False when none could be.
bool PinProcess(pid_t pid, const cpu_set_t& cpus) {
  std::error_code ec;
  bool any = false;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    const pid_t tid = static_cast<pid_t>(std::stol(task.path().filename().string()));
    any |= sched_setaffinity(tid, sizeof(cpus), &cpus) == 0;
  }
  return any;
}

std::string Percent(double ratio) { return absl::StrFormat("%+.1f%%", 100 * (ratio - 1)); }

// Prints what `r` measured for endpoints {plain, TLS}: per round the p50s and their ratio, then
// all plans' p50/p99, the median round ratio with its range, and the CPU per call of the client
// and of the coordinator. `digits`: decimals of the milliseconds.
void Report(const std::string& what, const Rounds& r, int plans, int digits) {
  std::vector<double> all[2], cpu[2], ratios;
  std::string per_round;
  for (size_t round = 0; round < r.rounds.size(); ++round) {
    const std::vector<Latencies>& l = r.rounds[round];
    const double p50[2] = {Percentile(l[0].ms, 0.5), Percentile(l[1].ms, 0.5)};
    ratios.push_back(p50[1] / p50[0]);
    absl::StrAppendFormat(&per_round, "%s%.*f/%.*f %s", round == 0 ? "" : ", ", digits, p50[0], digits, p50[1],
                          Percent(ratios.back()));
    for (int k = 0; k < 2; ++k) {
      all[k].insert(all[k].end(), l[k].ms.begin(), l[k].ms.end());
      cpu[k].insert(cpu[k].end(), l[k].client_cpu.begin(), l[k].client_cpu.end());
    }
  }
  const double p50[2] = {Percentile(all[0], 0.5), Percentile(all[1], 0.5)};
  const double p99[2] = {Percentile(all[0], 0.99), Percentile(all[1], 0.99)};
  const double client[2] = {Percentile(cpu[0], 0.5), Percentile(cpu[1], 0.5)};
  double server[2];
  for (int k = 0; k < 2; ++k) server[k] = all[k].empty() ? 0 : r.server_cpu_ms[k] / static_cast<double>(all[k].size());
  std::printf(
      "%s, %d each: plain p50 %.*f ms p99 %.*f ms; TLS p50 %.*f ms p99 %.*f ms; TLS/plain p50 %s, p99 %s  (goal < 5%%)\n"
      "    %zu rounds, TLS/plain of each round's p50: median %s, lowest %s, highest %s  (plain/TLS ms: %s)\n"
      "    CPU per call: client plain %.2f ms, TLS %.2f ms (p50); coordinator plain %.2f ms, TLS %.2f ms (mean)\n",
      what.c_str(), plans, digits, p50[0], digits, p99[0], digits, p50[1], digits, p99[1], Ratio(p50[1], p50[0]).c_str(),
      Ratio(p99[1], p99[0]).c_str(), ratios.size(), Percent(Percentile(ratios, 0.5)).c_str(),
      Percent(*std::min_element(ratios.begin(), ratios.end())).c_str(),
      Percent(*std::max_element(ratios.begin(), ratios.end())).c_str(), per_round.c_str(), client[0], client[1],
      server[0], server[1]);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int plans = 300;
  int cli_plans = 50;
  int rounds = 5;
  bool pin = true;
  int workers = 1000;
  int window_s = 10;
  bool latency = true, heartbeats = true;
  std::string binary = loom::testing::CoordinatorBinary();
  std::string loom_binary = loom::testing::LoomBinary();
  loom::CommandLine cl("bench_tls",
                       "The cost of mutual TLS on the control plane: submit -> status latency (p50/p99) and the "
                       "coordinator's CPU with simulated workers heartbeating, each with and without TLS in the same "
                       "run (real loom-coordinator processes on 127.0.0.1).");
  cl.AddFlag("plans", &plans, "submit -> status round trips per coordinator and connection kind");
  cl.AddFlag("cli-plans", &cli_plans, "`loom submit` + `loom status` process pairs per coordinator (0: none)");
  cl.AddFlag("rounds", &rounds,
             "split --plans and --cli-plans into this many rounds, each with its own TLS/plain ratio; the median "
             "ratio and its range are printed (1: one ratio over all plans)");
  cl.AddFlag("workers", &workers, "simulated workers heartbeating once a second");
  cl.AddFlag("pin", &pin,
             "latency: run both coordinators on the last CPU and this process on the others (with 2 CPUs or more), "
             "so the machine's other load falls on both coordinators alike");
  cl.AddFlag("window", &window_s, "seconds over which the coordinator's CPU time is measured");
  cl.AddFlag("latency", &latency, "measure submit -> status latency");
  cl.AddFlag("heartbeats", &heartbeats, "measure the coordinator's CPU for heartbeats");
  cl.AddFlag("coordinator", &binary, "the loom-coordinator binary to measure");
  cl.AddFlag("loom", &loom_binary, "the loom binary of the --cli-plans pairs (e.g. another build's, to compare)");
  cl.AddEpilog("example:\n  build/bench/tls/bench_tls --plans 300 --workers 1000\n"
               "  build/bench/tls/bench_tls --plans 1000 --cli-plans 100 --rounds 10 --heartbeats=false");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  if (plans < 1 || workers < 1 || window_s < 1 || cli_plans < 0) {
    std::fprintf(stderr, "--plans, --workers and --window must be at least 1 (e.g. --plans 300 --workers 1000)\n");
    return 2;
  }
  if (rounds < 1 || rounds > plans || (cli_plans > 0 && rounds > cli_plans)) {
    std::fprintf(stderr, "--rounds must be at least 1 and at most --plans and --cli-plans (e.g. --rounds 5)\n");
    return 2;
  }

  // A CA, the coordinator's certificate, an admin for the client and one per simulated worker.
  std::string dir = (std::filesystem::temp_directory_path() / "loom-bench-tls-XXXXXX").string();
  dir = mkdtemp(dir.data());
  const std::string tls_dir = dir + "/tls";
  absl::Status made = loom::InitCertificateAuthority(tls_dir);
  if (made.ok()) made = loom::IssueCertificate(tls_dir, {.role = "coordinator", .name = "coordinator"});
  if (made.ok()) made = loom::IssueCertificate(tls_dir, {.role = "admin", .name = "admin"});
  for (int i = 0; made.ok() && heartbeats && i < workers; ++i) {
    made = loom::IssueCertificate(tls_dir, {.role = "worker", .name = "sim-" + std::to_string(i)});
  }
  if (!made.ok()) {
    std::fprintf(stderr, "bench_tls: cannot make certificates in %s: %s\n", tls_dir.c_str(),
                 std::string(made.message()).c_str());
    return 1;
  }
  if (!loom::bench::RaiseFileLimit(static_cast<rlim_t>(workers) + 1024)) return 1;
  bool failed = false;

  if (latency) {
    const std::string plan_yaml = loom::testing::ReadAll(loom::testing::SourcePath("tests/integration/two_stage_plan.yaml"));
    CoordinatorProcess plain(binary), tls(binary, {"--tls-dir", tls_dir, "--tls-name", "coordinator"});
    if (!plain.ok() || !tls.ok()) return 1;
    const int cpus = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
    cpu_set_t all_cpus;  // this process's CPUs before --pin, for what comes after the latency
    CPU_ZERO(&all_cpus);
    sched_getaffinity(0, sizeof(all_cpus), &all_cpus);
    if (pin && cpus >= 2) {
      // Both coordinators share the last CPU, so whatever else runs on it slows both alike instead
      // of whichever coordinator the scheduler happened to put there; this process (and the
      // `loom` processes it starts) gets the other CPUs.
      cpu_set_t last, others;
      CPU_ZERO(&last);
      CPU_ZERO(&others);
      CPU_SET(cpus - 1, &last);
      for (int c = 0; c + 1 < cpus; ++c) CPU_SET(c, &others);
      if (!PinProcess(plain.pid(), last) || !PinProcess(tls.pid(), last) || !PinProcess(getpid(), others)) {
        std::fprintf(stderr, "bench_tls: cannot pin the coordinators to CPU %d (run with --pin=false)\n", cpus - 1);
        return 1;
      }
      std::printf("coordinators on CPU %d, this process on CPUs 0-%d (--pin)\n", cpus - 1, cpus - 2);
    }
    const std::vector<Endpoint> endpoints = {
        {plain.address(), grpc::InsecureChannelCredentials(), plain.pid(), ""},
        {tls.address(), Tls(tls_dir, "admin"), tls.pid(), "--tls-dir " + tls_dir + " --tls-name admin"}};
    for (const bool fresh : {false, true}) {
      const Rounds r = MeasureLatency(endpoints, plans, rounds, fresh, plan_yaml);
      if (!r.error.empty()) {
        std::fprintf(stderr, "bench_tls: %s\n", r.error.c_str());
        failed = true;
        break;
      }
      Report(fresh ? "submit -> status, a new connection per plan" : "submit -> status, one held connection", r,
             plans, 3);
    }
    if (!failed && cli_plans > 0) {
      const Rounds r = MeasureCli(loom_binary, endpoints, cli_plans, rounds,
                                  loom::testing::SourcePath("tests/integration/two_stage_plan.yaml"), dir);
      if (!r.error.empty()) {
        std::fprintf(stderr, "bench_tls: %s\n", r.error.c_str());
        failed = true;
      } else {
        Report("`loom submit` then `loom status` (processes)", r, cli_plans, 1);
      }
    }
    PinProcess(getpid(), all_cpus);  // the heartbeat measurement runs unpinned, as before
  }

  if (heartbeats && !failed) {
    for (const bool datagrams : {true, false}) {
      const Cpu plain = MeasureHeartbeats(binary, "", workers, datagrams, window_s);
      const Cpu tls = MeasureHeartbeats(binary, tls_dir, workers, datagrams, window_s);
      std::printf(
          "%d workers heartbeating 1/s %s: coordinator CPU plain %.2f%% of one core, TLS %.2f%%; TLS/plain %s  "
          "(goal < 5%%)\n      plain %s\n      TLS   %s\n",
          workers, datagrams ? "as loom-worker does (UDP datagrams)" : "every beat on the gRPC stream", plain.percent,
          tls.percent, Ratio(tls.percent, plain.percent).c_str(), plain.note.c_str(), tls.note.c_str());
      std::fflush(stdout);
      failed |= plain.percent < 0 || tls.percent < 0;
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return failed ? 1 : 0;
}
