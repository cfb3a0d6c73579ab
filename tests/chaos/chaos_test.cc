// A seeded chaos harness, after FoundationDB's simulation testing: from a seed it draws a schedule
// of faults over a running plan (real coordinator, two real worker daemons, real loom-rank
// processes training on prepared shards) and at the end checks the invariants:
//   - the plan SUCCEEDED;
//   - every checkpoint committed before a fault is still listed and loadable (its files match
//     its manifest), or was retired (by retention, or replaced by a later attempt at the same
//     step) and is gone from disk; nothing listed is gone;
//   - the final model equals an undisturbed run's, bit for bit (the layout never changes here).
// Faults: SIGKILL of a worker (restarted), of a rank, of the coordinator (restarted); SIGSTOP of a
// rank (the hang detector must notice); SIGSTOP for 3 s of a worker or of the coordinator (past
// the heartbeat timeout); the newest committed checkpoint corrupted (a flipped byte) or truncated,
// then a rank killed so that the next attempt must resume from it.
//
//   LOOM_CHAOS_SEEDS=1,2,3 (default) or 1-50   which seeds to run
//   LOOM_CHAOS_FAULTS=3                          faults per seed
//   LOOM_CHAOS_LOGS=DIR                          keep each seed's logs in DIR/chaos-seed-N.log
// A failing seed prints the command that replays it. bench/chaos runs 50 and prints, per fault
// kind, the time from the fault to the first step of the next attempt and the share of wall time
// lost against the undisturbed run.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint_io.h"
#include "common/sha256.h"
#include "google/protobuf/util/json_util.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using Clock = std::chrono::steady_clock;
using loom::v1::PlanStatus;

constexpr int kSteps = 200;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// One pretrain stage: 200 steps of 512 tokens on dp=2 (one rank on each worker), a checkpoint every
// 5 steps, the newest 3 kept; a job with no step for 8 s is hung (longer than a rank's pause
// between two asks for its write lease while the coordinator restarts).
std::string WritePlan(const std::string& path) {
  std::ofstream(path) << R"(name: chaos
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
hang: {step_time_factor: 10, min_seconds: 8}
retry: {max_retries: 50, initial_backoff_seconds: 0.2, max_backoff_seconds: 1}
stages:
  - name: core
    kind: pretrain
    tokens: )" << kSteps * 512
                      << R"(
    parallel: {dp: 2, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 0.5, code: 0.5}}]
    checkpoint: {every_steps: 5, keep_last: 3}
)";
  return path;
}

enum class Fault {
  kKillWorker,
  kKillRank,
  kStopRank,
  kKillCoordinator,
  kCorruptCheckpoint,
  kStopWorker,
  kStopCoordinator,
  kTruncateCheckpoint,
};
constexpr int kFaultKinds = 8;
const char* Name(Fault f) {
  switch (f) {
    case Fault::kKillWorker: return "SIGKILL worker";
    case Fault::kKillRank: return "SIGKILL rank";
    case Fault::kStopRank: return "SIGSTOP rank";
    case Fault::kKillCoordinator: return "SIGKILL coordinator";
    case Fault::kCorruptCheckpoint: return "corrupt newest checkpoint";
    case Fault::kStopWorker: return "SIGSTOP worker 3 s";
    case Fault::kStopCoordinator: return "SIGSTOP coordinator 3 s";
    case Fault::kTruncateCheckpoint: return "truncate newest checkpoint";
  }
  return "?";
}

struct ScheduledFault {
  Fault kind;
  int at_step;  // injected once rank 0 reported this step
  int target;   // which worker or rank (0 or 1)
};

std::vector<ScheduledFault> DrawSchedule(uint64_t seed, int faults) {
  std::mt19937_64 random(seed);
  std::vector<ScheduledFault> out;
  for (int i = 0; i < faults; ++i) {
    out.push_back({static_cast<Fault>(random() % kFaultKinds), static_cast<int>(4 + random() % (kSteps - 12)),
                   static_cast<int>(random() % 2)});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.at_step < b.at_step; });
  return out;
}

struct Outcome {
  bool succeeded = false;
  std::string final_model_sha256;
  double wall_seconds = 0;
};

// Seconds from each fault to the first step of the next attempt (after a coordinator restart,
// which keeps the attempt: to the next step), by fault kind, over every seed run.
std::map<std::string, std::vector<double>>& RecoveryTimes() {
  static std::map<std::string, std::vector<double>> times;
  return times;
}
std::vector<double>& LostShares() {
  static std::vector<double> shares;
  return shares;
}

std::string FinalModelSha(const PlanStatus& s) {
  const std::string path = s.jobs(0).final_checkpoint().path() + "/model.safetensors";
  absl::StatusOr<std::string> sha = Sha256File(path);
  return sha.ok() ? *sha : std::string("unreadable: ") + path;
}

loom::v1::ListCheckpointsResponse Checkpoints(Cluster& cluster, const std::string& id) {
  loom::v1::ListCheckpointsResponse list;
  const CommandResult r = cluster.Loom({"checkpoints", id, "--json"});
  if (r.exit_code == 0) (void)google::protobuf::util::JsonStringToMessage(r.out, &list);
  return list;
}

// A coordinator and two workers of one slot each, running real ranks.
std::unique_ptr<Cluster> StartCluster() {
  auto cluster = std::make_unique<Cluster>(
      ClusterOptions{.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = PreparedData()});
  cluster->StartCoordinator();
  cluster->StartWorker("w1", 1);
  cluster->StartWorker("w2", 1);
  return cluster;
}

Outcome RunUndisturbed() {
  std::unique_ptr<Cluster> started = StartCluster();
  Cluster& cluster = *started;
  const auto start = Clock::now();
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(300));
  Outcome o;
  o.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  o.succeeded = s.state() == loom::v1::PLAN_STATE_SUCCEEDED;
  o.final_model_sha256 = FinalModelSha(s);
  EXPECT_TRUE(o.succeeded) << cluster.Logs();
  return o;
}

const Outcome& Undisturbed() {
  static const Outcome outcome = RunUndisturbed();
  return outcome;
}

std::string Replay(uint64_t seed) {
  return absl::StrCat("LOOM_CHAOS_SEEDS=", seed, " ", BinaryPath("tests/chaos/chaos_test"));
}

void RunSeed(uint64_t seed, int faults) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, "; replay: ", Replay(seed)));
  const Outcome& reference = Undisturbed();
  ASSERT_TRUE(reference.succeeded);
  std::unique_ptr<Cluster> started = StartCluster();
  Cluster& cluster = *started;
  const auto start = Clock::now();
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml"));
  std::map<std::string, loom::v1::CheckpointInfo> seen;  // committed before some fault, by path
  std::set<std::string> corrupted;  // by the harness: loadable only if never read since (a race)
  std::string log;
  for (const ScheduledFault& f : DrawSchedule(seed, faults)) {
    const PlanStatus before = cluster.WaitForPlan(
        id, [&](const PlanStatus& s) { return Ended(s) || s.jobs(0).progress().step() >= f.at_step; },
        std::chrono::seconds(300));
    if (Ended(before)) break;
    const loom::v1::ListCheckpointsResponse committed = Checkpoints(cluster, id);
    for (const auto& c : committed.checkpoints()) seen[c.path()] = c;
    const int attempt = before.jobs(0).attempt();
    const int64_t step = before.jobs(0).progress().step();
    const std::string worker = f.target == 0 ? "w1" : "w2";
    const std::string rank = absl::StrCat("core#", attempt, "/rank", f.target, "/");
    absl::StrAppend(&log, "  step ", step, ": ", Name(f.kind), " (", f.target, ")\n");
    const auto fault_time = Clock::now();
    switch (f.kind) {
      case Fault::kKillWorker:
        cluster.KillWorker(worker, SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        cluster.StartWorker(worker, 1);
        break;
      case Fault::kKillRank:
      case Fault::kStopRank: {
        const pid_t pid = FindProcess({"loom-rank", rank});
        if (pid > 0) kill(pid, f.kind == Fault::kKillRank ? SIGKILL : SIGSTOP);
        break;
      }
      case Fault::kKillCoordinator:
        cluster.KillCoordinator(SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        cluster.StartCoordinator();
        break;
      case Fault::kStopWorker:
      case Fault::kStopCoordinator: {
        // Longer than the heartbeat timeout (2 s): a stalled host, or a stalled coordinator.
        Process* p = f.kind == Fault::kStopWorker ? cluster.worker(worker) : cluster.coordinator();
        kill(p->pid(), SIGSTOP);
        std::this_thread::sleep_for(std::chrono::seconds(3));
        kill(p->pid(), SIGCONT);
        break;
      }
      case Fault::kTruncateCheckpoint:
      case Fault::kCorruptCheckpoint: {
        PlanStatus now;
        const loom::v1::CheckpointInfo& last =
            cluster.Status(id, &now) ? now.jobs(0).last_checkpoint() : before.jobs(0).last_checkpoint();
        // Not the final one: once committed, the stage is done and nothing reads it again.
        const std::string newest = last.final() ? std::string() : last.path();
        if (!newest.empty()) {
          corrupted.insert(newest);
          const std::string weights = newest + "/model.safetensors";
          if (f.kind == Fault::kTruncateCheckpoint) {
            std::error_code ec;
            std::filesystem::resize_file(weights, std::filesystem::file_size(weights, ec) / 2, ec);
          } else {
            std::fstream file(weights, std::ios::in | std::ios::out | std::ios::binary);
            file.seekp(100);
            file.put('#');
          }
        }
        const pid_t pid = FindProcess({"loom-rank", rank});
        if (pid > 0) kill(pid, SIGKILL);
        break;
      }
    }
    // Recovered: the first step of a later attempt (or, after a coordinator restart or stall that
    // keeps the attempt, the next step).
    const PlanStatus after = cluster.WaitForPlan(
        id,
        [&](const PlanStatus& s) {
          const auto& p = s.jobs(0).progress();
          return Ended(s) || p.rank().attempt() > attempt ||
                 ((f.kind == Fault::kKillCoordinator || f.kind == Fault::kStopCoordinator ||
                   f.kind == Fault::kStopWorker) &&
                  p.step() > step);
        },
        std::chrono::seconds(300));
    RecoveryTimes()[Name(f.kind)].push_back(std::chrono::duration<double>(Clock::now() - fault_time).count());
    if (Ended(after)) break;
  }
  const PlanStatus end = cluster.WaitForPlan(id, Ended, std::chrono::seconds(300));
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  LostShares().push_back(std::max(0.0, (wall - reference.wall_seconds) / wall));
  std::printf("seed %llu: %s in %.1f s (undisturbed %.1f s), %d attempts\n%s", static_cast<unsigned long long>(seed),
              loom::v1::PlanState_Name(end.state()).c_str(), wall, reference.wall_seconds, end.jobs(0).attempt(),
              log.c_str());
  for (const auto& t : end.jobs(0).transitions()) {
    if (t.to_state() == loom::v1::JOB_STATE_RECOVERING) std::printf("    attempt %d: %s\n", t.attempt(), t.reason().c_str());
  }
  if (const char* keep = std::getenv("LOOM_CHAOS_LOGS"); keep != nullptr && *keep != '\0') {
    std::ofstream(absl::StrCat(keep, "/chaos-seed-", seed, ".log")) << log << cluster.Logs();
  }
  ASSERT_EQ(end.state(), loom::v1::PLAN_STATE_SUCCEEDED) << log << cluster.Logs();
  EXPECT_EQ(FinalModelSha(end), reference.final_model_sha256) << "the final model differs from the undisturbed run's\n"
                                                              << log;
  // Listed means there and intact; committed before a fault means listed, or retired and gone.
  std::set<std::string> listed;
  const loom::v1::ListCheckpointsResponse final_list = Checkpoints(cluster, id);
  for (const auto& c : final_list.checkpoints()) {
    listed.insert(c.path());
    // The harness corrupts the newest checkpoint and kills a rank; when a newer one was committed
    // in between, the next attempt resumes from that one and nothing ever reads the damaged one.
    if (corrupted.contains(c.path())) continue;
    EXPECT_TRUE(c.bad().empty()) << c.DebugString();
    EXPECT_TRUE(ReadCheckpointManifest(c.path(), /*verify=*/true).ok()) << "listed but not loadable: " << c.path();
  }
  for (const auto& [path, c] : seen) {
    if (!listed.contains(path)) EXPECT_FALSE(std::filesystem::exists(path)) << "retired but still on disk: " << path;
  }
}

std::vector<uint64_t> Seeds() {
  const char* env = std::getenv("LOOM_CHAOS_SEEDS");
  const std::string spec = env != nullptr && *env != '\0' ? env : "1,2,3";
  std::vector<uint64_t> seeds;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    std::vector<std::string> range = absl::StrSplit(part, '-');
    uint64_t lo = 0, hi = 0;
    if (!absl::SimpleAtoi(range[0], &lo)) continue;
    hi = lo;
    if (range.size() == 2 && !absl::SimpleAtoi(range[1], &hi)) continue;
    for (uint64_t s = lo; s <= hi; ++s) seeds.push_back(s);
  }
  return seeds;
}

TEST(Chaos, EverySeedSucceedsWithTheUndisturbedModelAndNoCheckpointLost) {
  int faults = 3;
  if (const char* env = std::getenv("LOOM_CHAOS_FAULTS"); env != nullptr) (void)absl::SimpleAtoi(env, &faults);
  for (uint64_t seed : Seeds()) {
    RunSeed(seed, faults);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::printf("\n%-28s %6s %10s %10s %10s\n", "fault", "count", "median s", "p90 s", "max s");
  for (auto& [kind, times] : RecoveryTimes()) {
    std::sort(times.begin(), times.end());
    std::printf("%-28s %6zu %10.2f %10.2f %10.2f\n", kind.c_str(), times.size(), times[times.size() / 2],
                times[std::min(times.size() - 1, times.size() * 9 / 10)], times.back());
  }
  std::vector<double>& lost = LostShares();
  std::sort(lost.begin(), lost.end());
  if (!lost.empty()) {
    std::printf("wall time lost against the undisturbed run (%.1f s): median %.0f%%, max %.0f%% over %zu seeds\n",
                Undisturbed().wall_seconds, 100 * lost[lost.size() / 2], 100 * lost.back(), lost.size());
  }
}

}  // namespace
}  // namespace loom::testing
