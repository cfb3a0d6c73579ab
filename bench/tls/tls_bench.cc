// The cost of mutual TLS on the control plane, each figure beside the same measurement without
// TLS in the same run (real loom-coordinator processes on 127.0.0.1):
//
// 1. submit -> status latency: SubmitPlan of a tiny valid plan (validated and queued: no worker
//    is registered, so nothing trains) and then GetPlan of the id it returned, p50/p99 over N
//    plans. Twice: on one held connection (what the Python client or a script that reuses its
//    channel pays: TLS records on an open connection), and on a new connection per plan (what
//    each `loom submit` / `loom status` process pays: TCP and TLS handshakes before the calls).
//    The TLS and plain coordinators run side by side and the plans alternate between them, so
//    noise on this machine lands on both.
// 2. the coordinator's CPU with 1,000 simulated workers heartbeating once a second
//    (bench/coordinator/sim_workers.h: one TCP connection per worker, as in a cluster), with and
//    without TLS. loom-worker heartbeats with UDP datagrams (common/heartbeat_datagram.h), which
//    TLS does not cover, and sends a full heartbeat on its gRPC Connect stream every 30th beat;
//    so this is measured twice: as loom-worker does it, and with every heartbeat on the stream
//    (the gRPC stream's cost, which TLS does touch: every message is a TLS record).
//
// The goal (issue 19) is under 5% overhead.
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

struct Latencies {
  std::vector<double> ms;
  std::string error;
};

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
};

// `plans` submit -> status on each endpoint, alternating; `fresh`: a new connection per plan.
std::vector<Latencies> MeasureLatency(const std::vector<Endpoint>& endpoints, int plans, bool fresh,
                                      const std::string& plan_yaml) {
  std::vector<Latencies> out(endpoints.size());
  std::vector<std::unique_ptr<loom::v1::PlanService::Stub>> held;
  for (const Endpoint& e : endpoints) {
    held.push_back(loom::v1::PlanService::NewStub(grpc::CreateChannel(e.address, e.credentials)));
  }
  for (int i = -5; i < plans; ++i) {  // 5 warm-up plans each
    for (size_t j = 0; j < endpoints.size(); ++j) {
      const size_t k = (j + static_cast<size_t>(i + 5)) % endpoints.size();  // who goes first alternates
      if (!out[k].error.empty()) continue;
      std::unique_ptr<loom::v1::PlanService::Stub> own;
      loom::v1::PlanService::Stub* stub = held[k].get();
      if (fresh) {
        grpc::ChannelArguments args;
        args.SetInt("loom.bench.plan", i);  // a connection of its own, as a new process has
        own = loom::v1::PlanService::NewStub(
            grpc::CreateCustomChannel(endpoints[k].address, endpoints[k].credentials, args));
        stub = own.get();
      }
      const double ms = SubmitThenStatus(stub, plan_yaml, &out[k].error);
      if (i >= 0 && ms >= 0) out[k].ms.push_back(ms);
    }
  }
  return out;
}

// `plans` times `loom submit` then `loom status` as processes, alternating between the
// endpoints (flags: each endpoint's extra `loom` flags); milliseconds of the pair, per endpoint.
std::vector<Latencies> MeasureCli(const std::vector<std::string>& addresses,
                                  const std::vector<std::string>& flags, int plans, const std::string& plan_path,
                                  const std::string& dir) {
  std::vector<Latencies> out(addresses.size());
  const std::string loom = loom::testing::LoomBinary();
  for (int i = -2; i < plans; ++i) {
    for (size_t j = 0; j < addresses.size(); ++j) {
      const size_t k = (j + static_cast<size_t>(i + 2)) % addresses.size();
      if (!out[k].error.empty()) continue;
      const std::string common = " --coordinator " + addresses[k] + " " + flags[k] + " 2>" + dir + "/cli.err";
      const auto t0 = Clock::now();
      if (std::system((loom + " submit " + plan_path + " --quiet" + common + " >" + dir + "/cli.out").c_str()) != 0) {
        out[k].error = "loom submit: " + loom::testing::ReadAll(dir + "/cli.err");
        continue;
      }
      std::string id = loom::testing::ReadAll(dir + "/cli.out");
      while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
      if (std::system((loom + " status " + id + common + " >/dev/null").c_str()) != 0) {
        out[k].error = "loom status: " + loom::testing::ReadAll(dir + "/cli.err");
        continue;
      }
      if (i >= 0) out[k].ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
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

}  // namespace

int main(int argc, char** argv) {
  int plans = 300;
  int cli_plans = 50;
  int workers = 1000;
  int window_s = 10;
  bool latency = true, heartbeats = true;
  std::string binary = loom::testing::CoordinatorBinary();
  loom::CommandLine cl("bench_tls",
                       "The cost of mutual TLS on the control plane: submit -> status latency (p50/p99) and the "
                       "coordinator's CPU with simulated workers heartbeating, each with and without TLS in the same "
                       "run (real loom-coordinator processes on 127.0.0.1).");
  cl.AddFlag("plans", &plans, "submit -> status round trips per coordinator and connection kind");
  cl.AddFlag("cli-plans", &cli_plans, "`loom submit` + `loom status` process pairs per coordinator (0: none)");
  cl.AddFlag("workers", &workers, "simulated workers heartbeating once a second");
  cl.AddFlag("window", &window_s, "seconds over which the coordinator's CPU time is measured");
  cl.AddFlag("latency", &latency, "measure submit -> status latency");
  cl.AddFlag("heartbeats", &heartbeats, "measure the coordinator's CPU for heartbeats");
  cl.AddFlag("coordinator", &binary, "the loom-coordinator binary to measure");
  cl.AddEpilog("example:\n  build/bench/tls/bench_tls --plans 300 --workers 1000");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  if (plans < 1 || workers < 1 || window_s < 1 || cli_plans < 0) {
    std::fprintf(stderr, "--plans, --workers and --window must be at least 1 (e.g. --plans 300 --workers 1000)\n");
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
    const std::vector<Endpoint> endpoints = {{plain.address(), grpc::InsecureChannelCredentials()},
                                             {tls.address(), Tls(tls_dir, "admin")}};
    for (const bool fresh : {false, true}) {
      const std::vector<Latencies> l = MeasureLatency(endpoints, plans, fresh, plan_yaml);
      for (const Latencies& x : l) {
        if (!x.error.empty()) {
          std::fprintf(stderr, "bench_tls: %s\n", x.error.c_str());
          failed = true;
        }
      }
      if (failed) break;
      const double p50[2] = {Percentile(l[0].ms, 0.5), Percentile(l[1].ms, 0.5)};
      const double p99[2] = {Percentile(l[0].ms, 0.99), Percentile(l[1].ms, 0.99)};
      std::printf(
          "submit -> status, %-27s %d plans each: plain p50 %.3f ms p99 %.3f ms; TLS p50 %.3f ms p99 %.3f ms; "
          "TLS/plain p50 %s, p99 %s  (goal < 5%%)\n",
          fresh ? "a new connection per plan," : "one held connection,", plans, p50[0], p99[0], p50[1], p99[1],
          Ratio(p50[1], p50[0]).c_str(), Ratio(p99[1], p99[0]).c_str());
      std::fflush(stdout);
    }
    if (!failed && cli_plans > 0) {
      const std::vector<Latencies> l =
          MeasureCli({plain.address(), tls.address()}, {"", "--tls-dir " + tls_dir + " --tls-name admin"}, cli_plans,
                     loom::testing::SourcePath("tests/integration/two_stage_plan.yaml"), dir);
      for (const Latencies& x : l) {
        if (!x.error.empty()) {
          std::fprintf(stderr, "bench_tls: %s\n", x.error.c_str());
          failed = true;
        }
      }
      if (!failed) {
        const double p50[2] = {Percentile(l[0].ms, 0.5), Percentile(l[1].ms, 0.5)};
        const double p99[2] = {Percentile(l[0].ms, 0.99), Percentile(l[1].ms, 0.99)};
        std::printf(
            "`loom submit` then `loom status` (processes), %d plans each: plain p50 %.1f ms p99 %.1f ms; TLS p50 %.1f "
            "ms p99 %.1f ms; TLS/plain p50 %s, p99 %s  (goal < 5%%)\n",
            cli_plans, p50[0], p99[0], p50[1], p99[1], Ratio(p50[1], p50[0]).c_str(), Ratio(p99[1], p99[0]).c_str());
        std::fflush(stdout);
      }
    }
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
