// Loom across hosts, on test hosts made as network namespaces (test_hosts.h): the coordinator on
// host 0, workers on hosts 1-3, every process at its host's own address, checkpoints on the
// shared directory. Training across hosts reproduces one process as the loopback tests do, with
// the shared-memory all-reduce only among ranks of one host and TCP across hosts; a host that dies
// and a host whose link is cut are recovered from the last committed checkpoint, and the cut
// host's stale rank can neither commit nor overwrite anything when it comes back; a real
// Prometheus on host 0 scrapes the workers the coordinator's /discovery lists; a worker that does
// not see the checkpoint root is refused. Label `hosts` (needs root; skips otherwise).
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/checkpoint_io.h"
#include "tests/hosts/test_hosts.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;
using Clock = std::chrono::steady_clock;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }
std::string RankBinary() { return BinaryPath("worker/loom-rank"); }

// One pre-training stage: `tokens` of 512-token steps, checkpoints every `every` steps.
std::string WritePlan(const Cluster& cluster, const std::string& name, int dp, int tp, int pp,
                      const std::string& tokens = "20Ki", int every = 5) {
  const std::string path = cluster.dir() + "/" + name + ".yaml";
  std::ofstream(path) << "name: " << name << R"(
seed: 3
model: {layers: 4, d_model: 128, heads: 4, kv_heads: 2, ffn_size: 256, vocab_size: 512}
data: {dir: )" << PreparedData() << R"(}
defaults:
  parallel: {dp: )" << dp << ", tp: " << tp << ", pp: " << pp << R"(, micro_batch_size: 2}
  optimizer: {lr: 3e-3}
  lr_schedule: {type: cosine, warmup_tokens: 4Ki}
  batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
  seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
  checkpoint: {every_steps: )" << every << R"(, keep_last: 0}
stages:
  - name: core
    kind: pretrain
    tokens: )" << tokens << R"(
    data_mix: [{at_tokens: 0, weights: {math: 0.7, code: 0.3}}]
)";
  return path;
}

std::string RankLog(const Cluster& cluster, const std::string& worker, const std::string& plan_id, int attempt,
                    int rank) {
  return cluster.work_dir(worker) + "/" + plan_id + "/core#" + std::to_string(attempt) + "/rank" +
         std::to_string(rank) + "/rank.log";
}

// The test hosts, or a skip with the reason.
#define LOOM_REQUIRE_TEST_HOSTS()                                    \
  do {                                                               \
    std::string why;                                                 \
    if (!TestHosts::Available(&why)) GTEST_SKIP() << why;            \
  } while (0)

class Hosts : public ::testing::Test {
 protected:
  void SetUp() override {
    LOOM_REQUIRE_TEST_HOSTS();
    // The prepared data, made once for the suite under /var/tmp, which every test host sees (its
    // /tmp is its own); each test's cluster directory and checkpoints live on its hosts' shared
    // directory.
    if (prepared_.empty()) {
      setenv("TMPDIR", "/var/tmp", 1);
      prepared_ = PreparedData();
    }
    hosts_ = std::make_unique<TestHosts>(4);
    ASSERT_EQ(hosts_->size(), 4);
    setenv("TMPDIR", hosts_->shared_dir().c_str(), 1);
  }
  static void TearDownTestSuite() {
    if (prepared_.empty()) return;
    const std::filesystem::path root = std::filesystem::path(prepared_).parent_path();
    std::filesystem::remove_all(root);
    std::filesystem::remove(root.string() + ".log");
  }
  static inline std::string prepared_;
  std::unique_ptr<TestHosts> hosts_;
};

TEST_F(Hosts, DataTensorAndPipelineParallelAcrossHostsMatchOneProcess) {
  Cluster cluster({.rank_binary = RankBinary(), .hosts = hosts_.get()});
  cluster.StartCoordinator();
  cluster.StartWorker("a", 1, {}, 1);
  cluster.StartWorker("b", 1, {}, 2);
  // Workers bind their host's address (the route to the coordinator) and the default metrics port.
  EXPECT_EQ(cluster.worker_metrics("a"), hosts_->address(1) + ":7072");
  EXPECT_EQ(cluster.worker_metrics("b"), hosts_->address(2) + ":7072");

  const std::string one = cluster.Submit(WritePlan(cluster, "one", 1, 1, 1));
  ASSERT_EQ(cluster.WaitForPlan(one, Ended, std::chrono::seconds(120)).state(), loom::v1::PLAN_STATE_SUCCEEDED)
      << cluster.Logs();
  PlanStatus s1;
  ASSERT_TRUE(cluster.Status(one, &s1));
  const auto reference = RankLosses(RankLog(cluster, s1.jobs(0).rank_workers(0), one, 1, 0));
  ASSERT_EQ(reference.size(), 40u);

  // Compares every step with one process: summation orders differ (1e-4 over the first 20 steps,
  // as the loopback tests; then ExpectSameTraining's bounds).
  auto expect_matches = [&](const std::string& name, const std::map<int64_t, std::string>& losses, double early) {
    ASSERT_EQ(losses.size(), reference.size()) << name;
    ExpectSameTraining(reference, losses, early, 20, name);
  };

  // dp=2 across hosts 1 and 2, and pp=2 across them: TCP between the hosts, at their addresses.
  for (const auto& [name, dp, pp, early] : {std::tuple<std::string, int, int, double>{"dp", 2, 1, 1e-4},
                                            {"pp", 1, 2, 1e-9}}) {
    const std::string id = cluster.Submit(WritePlan(cluster, name, dp, 1, pp));
    PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(120));
    ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
    ASSERT_EQ(s.jobs(0).rank_workers_size(), 2);
    EXPECT_NE(s.jobs(0).rank_workers(0), s.jobs(0).rank_workers(1)) << name << " should span both hosts";
    const std::string log1 = ReadAll(RankLog(cluster, s.jobs(0).rank_workers(1), id, 1, 1));
    expect_matches(name, RankLosses(RankLog(cluster, s.jobs(0).rank_workers(1), id, 1, 1)), early);
    const std::string host_of_rank1 = s.jobs(0).rank_workers(1) == "a" ? hosts_->address(1) : hosts_->address(2);
    EXPECT_NE(log1.find("of 2 on " + host_of_rank1 + ", tcp"), std::string::npos) << log1;
    EXPECT_EQ(log1.find("127.0.0.1"), std::string::npos) << log1;
  }

  // dp=2 x tp=2 on two hosts of two slots: each tensor-parallel pair inside a host (its all-reduce
  // over shared memory), the data-parallel pairs across the hosts (TCP). Worker a leaves host 1
  // (SIGTERM: it says so and exits 0) for c; b stays on host 2, drained, so nothing lands there.
  ASSERT_EQ(cluster.Loom({"workers", "drain", "b"}).exit_code, 0);
  EXPECT_EQ(cluster.KillWorker("a", SIGTERM), 0) << cluster.Logs();
  EXPECT_TRUE(std::regex_search(cluster.Loom({"workers"}).out, std::regex(R"(a\s+lost .*left)")))
      << "a worker that leaves is marked lost at once\n" << cluster.Loom({"workers"}).out;
  cluster.StartWorker("c", 2, {}, 1);
  cluster.StartWorker("d", 2, {}, 3);
  const std::string id = cluster.Submit(WritePlan(cluster, "dptp", 2, 2, 1));
  PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(180));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  ASSERT_EQ(s.jobs(0).rank_workers_size(), 4);
  EXPECT_EQ(s.jobs(0).rank_workers(0), s.jobs(0).rank_workers(1)) << "a tensor-parallel pair shares a host";
  EXPECT_EQ(s.jobs(0).rank_workers(2), s.jobs(0).rank_workers(3));
  EXPECT_NE(s.jobs(0).rank_workers(0), s.jobs(0).rank_workers(2)) << "the data-parallel pairs span the hosts";
  for (const std::string& w : s.jobs(0).rank_workers()) EXPECT_TRUE(w == "c" || w == "d") << "drained: " << w;
  const std::string log3 = ReadAll(RankLog(cluster, s.jobs(0).rank_workers(3), id, 1, 3));
  EXPECT_NE(log3.find("group tp1_0: rank 1 of 2 on"), std::string::npos) << log3;
  EXPECT_NE(log3.find("all-reduce over shared memory"), std::string::npos) << log3;
  EXPECT_TRUE(std::regex_search(log3, std::regex(R"(group dp0_1: rank 1 of 2 on [0-9.]+, tcp)"))) << log3;
  expect_matches("dp x tp", RankLosses(RankLog(cluster, s.jobs(0).rank_workers(3), id, 1, 3)), 1e-4);
}

// Seconds from `since` until the job's attempt `attempt` reports a step after `resumed_step`.
double SecondsToFirstStep(Cluster& cluster, const std::string& plan_id, int attempt, Clock::time_point since) {
  PlanStatus s = cluster.WaitForPlan(
      plan_id,
      [&](const PlanStatus& st) {
        return st.jobs(0).attempt() >= attempt && st.jobs(0).progress().rank().attempt() == attempt &&
               st.jobs(0).progress().step() > 0;
      },
      std::chrono::seconds(90));
  return std::chrono::duration<double>(Clock::now() - since).count();
}

TEST_F(Hosts, AKilledHostIsRecoveredFromTheLastCommittedCheckpointOnTheOtherHosts) {
  Cluster cluster({.rank_binary = RankBinary(), .hosts = hosts_.get()});
  cluster.StartCoordinator();
  cluster.StartWorker("a", 1, {}, 1);
  cluster.StartWorker("b", 1, {}, 2);
  const std::string id = cluster.Submit(WritePlan(cluster, "kill", 2, 1, 1, "60Ki", 10));
  PlanStatus before = cluster.WaitForPlan(
      id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 20; }, std::chrono::seconds(120));
  ASSERT_GE(before.jobs(0).last_checkpoint().step(), 20) << cluster.Logs();
  cluster.StartWorker("c", 1, {}, 3);  // where the job can go
  const std::string victim = before.jobs(0).rank_workers(1);
  const int victim_host = victim == "a" ? 1 : 2;
  const auto killed = Clock::now();
  hosts_->Kill(victim_host);
  const double recovery = SecondsToFirstStep(cluster, id, 2, killed);
  PlanStatus done = cluster.WaitForPlan(id, Ended, std::chrono::seconds(180));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(done.jobs(0).attempt(), 2);
  EXPECT_NE(done.jobs(0).resumed_from().find("/core/attempt-1/step-"), std::string::npos) << done.DebugString();
  for (const std::string& w : done.jobs(0).rank_workers()) EXPECT_NE(w, victim);
  std::printf("recovery after a host kill (SIGKILL of every process on host %d) to the first step of attempt 2: "
              "%.1f s\n",
              victim_host, recovery);
}

TEST_F(Hosts, ACutLinkIsRecoveredAndTheStaleRankCanNeitherCommitNorOverwrite) {
  Cluster cluster({.rank_binary = RankBinary(), .hosts = hosts_.get()});
  cluster.StartCoordinator();
  cluster.StartWorker("a", 1, {}, 1);
  // 160 steps, a checkpoint every 4: the rank cut off keeps training and reaches a checkpoint while
  // it is cut off.
  const std::string id = cluster.Submit(WritePlan(cluster, "cut", 1, 1, 1, "80Ki", 4));
  PlanStatus before = cluster.WaitForPlan(
      id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 8; }, std::chrono::seconds(120));
  ASSERT_GE(before.jobs(0).last_checkpoint().step(), 8) << cluster.Logs();
  cluster.StartWorker("b", 1, {}, 2);
  const auto cut = Clock::now();
  hosts_->SetLink(1, false);
  const double recovery = SecondsToFirstStep(cluster, id, 2, cut);
  // Let the new attempt commit checkpoints while the old one, alone on host 1, still trains.
  PlanStatus moved = cluster.WaitForPlan(
      id,
      [](const PlanStatus& s) {
        return s.jobs(0).last_checkpoint().attempt() == 2 &&
               s.jobs(0).last_checkpoint().step() >= s.jobs(0).progress().step() - 4 &&
               s.jobs(0).last_checkpoint().step() > 20;
      },
      std::chrono::seconds(120));
  ASSERT_EQ(moved.jobs(0).last_checkpoint().attempt(), 2) << cluster.Logs();
  // What attempt 2 committed so far, by step: its manifest's inode and modification time, which
  // nothing the stale rank does may change.
  auto committed_by_attempt_2 = [&] {
    std::map<int64_t, std::pair<ino_t, int64_t>> files;
    CommandResult listed = cluster.Loom({"checkpoints", id, "--json"});
    const nlohmann::json j = nlohmann::json::parse(listed.out, nullptr, false);
    if (j.is_discarded()) return files;
    for (const auto& c : j.value("checkpoints", nlohmann::json::array())) {
      if (c.value("attempt", 0) != 2) continue;
      struct stat st {};
      const std::string manifest = c.value("path", "") + "/manifest.json";
      if (stat(manifest.c_str(), &st) != 0) continue;
      files[std::stoll(c.value("step", "0"))] = {st.st_ino, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec};
    }
    return files;
  };
  const auto before_return = committed_by_attempt_2();
  ASSERT_FALSE(before_return.empty());
  hosts_->SetLink(1, true);
  // Back on the network: worker a reconnects and its stale rank is gone (fenced or aborted).
  const std::string stale_log = RankLog(cluster, "a", id, 1, 0);
  const auto until = Clock::now() + std::chrono::seconds(60);
  std::string workers;
  while (Clock::now() < until) {
    workers = cluster.Loom({"workers"}).out;
    if (std::regex_search(workers, std::regex(R"(a\s+idle)")) && !cluster.worker("a")->log().empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_TRUE(std::regex_search(workers, std::regex(R"(a\s+idle)"))) << workers << cluster.Logs();
  PlanStatus done = cluster.WaitForPlan(id, Ended, std::chrono::seconds(180));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const std::string stale = ReadAll(stale_log);
  const std::string worker_a = cluster.worker("a")->log();
  EXPECT_TRUE(stale.find("fenced") != std::string::npos ||
              worker_a.find("abort (") != std::string::npos)
      << "the stale rank was neither fenced nor aborted:\n" << stale << "\n" << worker_a;
  const auto after = committed_by_attempt_2();
  for (const auto& [step, file] : before_return) {
    ASSERT_TRUE(after.contains(step)) << "attempt 2's checkpoint at step " << step << " is gone";
    EXPECT_EQ(after.at(step), file) << "attempt 2's checkpoint at step " << step << " was rewritten";
  }

  // Every checkpoint the coordinator committed is there and intact (sha-256), each written by the
  // attempt it names; attempt 1 committed nothing after the cut.
  CommandResult listed = cluster.Loom({"checkpoints", id, "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const std::regex path_re(R"re("path":\s*"([^"]+)")re");
  int checked = 0;
  for (std::sregex_iterator it(listed.out.begin(), listed.out.end(), path_re), end; it != end; ++it) {
    absl::StatusOr<loom::v1::CheckpointManifest> m = ReadCheckpointManifest((*it)[1], /*verify=*/true);
    EXPECT_TRUE(m.ok()) << (*it)[1] << ": " << m.status();
    ++checked;
  }
  EXPECT_GT(checked, 5);
  EXPECT_EQ(done.jobs(0).final_checkpoint().attempt(), 2) << done.DebugString();
  std::printf("recovery after a link cut (host 1's link down) to the first step of attempt 2: %.1f s\n", recovery);
}

// `up` of every target Prometheus at `web` (on host 0) scrapes: instance -> value.
std::map<std::string, std::string> UpByInstance(const TestHosts& hosts, const std::string& web) {
  std::map<std::string, std::string> up;
  const nlohmann::json r = nlohmann::json::parse(hosts.HttpGetFrom(0, web, "/api/v1/query?query=up"), nullptr, false);
  if (r.is_discarded() || !r.contains("data")) return up;
  for (const auto& s : r["data"]["result"]) up[s["metric"].value("instance", "")] = s["value"][1].get<std::string>();
  return up;
}

// A real Prometheus on host 0 runs deploy/prometheus/prometheus.yml, with only the coordinator's
// address, the scrape interval (1 s) and the discovery refresh (1 s) changed: it scrapes the
// coordinator and, found through the coordinator's /discovery, the workers on hosts 1-3 at their
// own addresses on the default port, each `up` within 30 s; a worker that leaves drops out of
// discovery and of Prometheus' targets.
TEST_F(Hosts, PrometheusScrapesTheWorkersItDiscoversAndDropsOneThatLeaves) {
  Cluster cluster({.rank_binary = RankBinary(), .hosts = hosts_.get()});
  cluster.StartCoordinator();
  for (int h = 1; h <= 3; ++h) cluster.StartWorker("w" + std::to_string(h), 1, {}, h);

  std::string config = ReadAll(SourcePath("deploy/prometheus/prometheus.yml"));
  const std::string example = "192.0.2.10:7071";
  ASSERT_NE(config.find(example), std::string::npos) << "the shipped file no longer names " << example;
  for (size_t at; (at = config.find(example)) != std::string::npos;)
    config.replace(at, example.size(), cluster.coordinator_metrics());
  config = std::regex_replace(config, std::regex("scrape_interval: 15s"), "scrape_interval: 1s");
  config = std::regex_replace(config, std::regex("refresh_interval: 30s"), "refresh_interval: 1s");
  std::ofstream(cluster.dir() + "/prometheus.yml") << config;
  const std::string web = hosts_->address(0) + ":9090";  // host 0's own network namespace
  const auto started = Clock::now();
  Process prometheus(cluster.OnHost(0, {"/usr/bin/prometheus", "--config.file=" + cluster.dir() + "/prometheus.yml",
                                        "--storage.tsdb.path=" + cluster.dir() + "/tsdb",
                                        "--web.listen-address=" + web}),
                     cluster.dir() + "/prometheus.log");

  std::map<std::string, std::string> want = {{cluster.coordinator_metrics(), "1"}};
  for (int h = 1; h <= 3; ++h) want[hosts_->address(h) + ":7072"] = "1";
  std::map<std::string, std::string> up;
  while (Clock::now() - started < std::chrono::seconds(30) && up != want) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    up = UpByInstance(*hosts_, web);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  ASSERT_EQ(up, want) << "want `up` 1 for the coordinator and each worker within 30 s\n"
                      << ReadAll(cluster.dir() + "/prometheus.log");
  std::printf("Prometheus on host 0: up == 1 for the coordinator and 3 workers %.1f s after it started\n", seconds);

  // Worker 2 leaves (SIGTERM): at once out of /discovery, and soon out of Prometheus' targets.
  const std::string left = hosts_->address(2) + ":7072";
  EXPECT_EQ(cluster.KillWorker("w2", SIGTERM), 0);
  const std::string discovery = cluster.Get(cluster.coordinator_metrics(), "/discovery");
  EXPECT_EQ(discovery.find(left), std::string::npos) << discovery;
  EXPECT_NE(discovery.find(hosts_->address(3) + ":7072"), std::string::npos) << discovery;
  bool dropped = false;
  for (const auto until = Clock::now() + std::chrono::seconds(20); !dropped && Clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string targets = hosts_->HttpGetFrom(0, web, "/api/v1/targets?state=active");
    dropped = !targets.empty() && targets.find(left) == std::string::npos &&
              targets.find(hosts_->address(3) + ":7072") != std::string::npos;
  }
  EXPECT_TRUE(dropped) << "Prometheus still scrapes the worker that left, " << left;
}

TEST_F(Hosts, AWorkerThatDoesNotSeeTheCheckpointRootIsRefused) {
  Cluster cluster({.rank_binary = RankBinary(), .hosts = hosts_.get()});
  cluster.StartCoordinator();
  // Hide the checkpoint root on host 3 only, as a host without the shared mount would.
  ASSERT_EQ(std::system(hosts_->WrapShell(3, "mount -t tmpfs tmpfs " + cluster.checkpoint_root()).c_str()), 0);
  cluster.StartWorker("blind", 1, {}, 3);
  const std::string refused =
      cluster.worker("blind")->WaitForLog("registration refused by [0-9.:]+: (.*)");
  EXPECT_NE(refused.find(cluster.checkpoint_root()), std::string::npos) << cluster.Logs();
  EXPECT_NE(refused.find(cluster.checkpoint_root() + "/.loom-storage-token"), std::string::npos) << refused;
  EXPECT_EQ(cluster.Loom({"workers"}).out.find("blind"), std::string::npos) << "a refused worker is not listed";
}

}  // namespace
}  // namespace loom::testing
