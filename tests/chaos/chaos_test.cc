// A seeded chaos harness, after FoundationDB's simulation testing: from a seed it draws a schedule
// of faults over a running plan (real coordinator, two real worker daemons, real loom-rank
// processes training on prepared shards) and at the end checks the invariants:
//   - the plan SUCCEEDED;
//   - every checkpoint committed before a fault is still listed and loadable (its files match
//     its manifest), or was retired (by retention, or replaced by a later attempt at the same
//     step) and is gone from disk; nothing listed is gone;
//   - the final model equals an undisturbed run's: bit for bit when the layout never changed,
//     within 1e-4 (relative L2 over all weights, CompareModels below) when an elastic shrink
//     changed it. Each seed prints which comparison ran.
// Faults: SIGKILL of a worker (restarted), of a rank, of the coordinator (restarted); SIGSTOP of a
// rank (the hang detector must notice); SIGSTOP for 3 s of a worker or of the coordinator (past
// the heartbeat timeout); the newest committed checkpoint corrupted (a flipped byte) or truncated,
// then a rank killed so that the next attempt must resume from it; a full disk (the checkpoint
// root, a 256 MiB tmpfs, filled with a ballast file until a save fails with ENOSPC and 5 steps
// more, then freed: the failure must show in JobStatus.checkpoint_save_failures with the ENOSPC
// error, training must go on in the same attempt, and a later interval commit again).
// Every third seed (3, 6, 9, ...; not partition seeds) is elastic: its stage has
// `parallel.elastic: true` and its schedule adds a worker SIGKILLed for good, so the job shrinks to
// dp 1 on the other one, which the seed checks. Its model is compared with the same undisturbed run
// (the elastic flag changes where attempts run, not what they compute).
// Every fifth seed (5, 10, ...) runs on test hosts (network namespaces, tests/hosts/test_hosts.h;
// the coordinator on host 0, workers w1-w3 on hosts 1-3, w3 a spare) and its schedule adds a
// partition: the link of a rank's host cut for 4 s (past the 2 s heartbeat timeout) and then
// restored. The job must move on to the spare; the cut-off attempt must commit nothing after the
// cut nor change what the new attempt committed, and its stale rank must be gone within 30 s of
// the link coming back. Where test hosts cannot be made (not root), these seeds are skipped, each
// with a line saying why. Full-disk faults are skipped on them (said in the seed's log).
//
// The checkpoint root's tmpfs is mounted in a mount namespace of this process's own (its children
// inherit it, and nothing is left mounted on the machine when it dies); partition seeds run in the
// machine's, where test hosts can be made. Where that is not allowed (not root), full-disk faults
// are skipped, each with a line saying why.
//
//   LOOM_CHAOS_SEEDS=1,2,3 (default) or 1-50   which seeds to run
//   LOOM_CHAOS_FAULTS=3                          faults per seed (elastic and partition seeds add theirs)
//   LOOM_CHAOS_LOGS=DIR                          keep each seed's logs in DIR/chaos-seed-N.log
//   LOOM_CHAOS_DISK_MIB=256                      the checkpoint root's tmpfs, in MiB
// A failing seed prints the command that replays it. bench/chaos runs 50 and prints, per fault
// kind, the time from the fault to the first step of the next attempt (see RecoveryTimes for the
// faults that keep the attempt) and the share of wall time lost against the undisturbed run.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint_io.h"
#include "common/sha256.h"
#include "google/protobuf/util/json_util.h"
#include "tests/chaos/chaos_faults.h"
#include "tests/hosts/test_hosts.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

using Clock = std::chrono::steady_clock;
using loom::v1::PlanStatus;

constexpr int kSteps = 200;
// The checkpoint root's filesystem (LOOM_CHAOS_DISK_MIB): a tmpfs, so its size costs memory only
// when filled. Not a few tens of MiB: a replaced attempt's rank can go on saving (uncommitted,
// about 1.7 MB each) until it learns it was replaced, and nothing deletes those saves before the
// job ends, so with 32 MiB one stalled worker fills the disk for good (bench/chaos/README.md).
int DiskMiB() {
  int mib = 256;
  if (const char* env = std::getenv("LOOM_CHAOS_DISK_MIB"); env != nullptr) (void)absl::SimpleAtoi(env, &mib);
  return mib;
}
// An elastic shrink sums the gradients in another order: the final model is compared within this
// (ModelsClose).
constexpr double kElasticTolerance = 1e-4;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// Every fifth seed runs on test hosts (network namespaces, tests/hosts/test_hosts.h) with a spare
// worker, and its schedule adds a partition: a rank's host cut off past the heartbeat timeout.
bool PartitionSeed(uint64_t seed) { return seed % 5 == 0; }
// Every third seed (not a partition seed) runs the elastic plan with a worker removed for good.
bool ElasticSeed(uint64_t seed) { return seed % 3 == 0 && !PartitionSeed(seed); }

// One pretrain stage: 200 steps of 512 tokens on dp=2 (one rank on each worker), a checkpoint every
// 5 steps, the newest 3 kept; a job with no step for 8 s is hung (longer than a rank's pause
// between two asks for its write lease while the coordinator restarts). `elastic`: the stage may
// shrink to dp 1 when a worker is gone.
std::string WritePlan(const std::string& path, bool elastic) {
  std::ofstream(path) << R"(name: chaos
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
hang: {step_time_factor: 10, min_seconds: 8}
retry: {max_retries: 50, initial_backoff_seconds: 0.2, max_backoff_seconds: 1}
stages:
  - name: core
    kind: pretrain
    tokens: )" << kSteps * 512
                      << R"(
    parallel: {dp: 2, micro_batch_size: 2, elastic: )"
                      << (elastic ? "true" : "false") << R"(}
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
  kFullDisk,
  // Not drawn with the others: one per elastic seed, one per partition seed.
  kRemoveWorker,
  kPartition,
};
constexpr int kDrawnFaultKinds = 9;  // kKillWorker .. kFullDisk
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
    case Fault::kFullDisk: return "full disk";
    case Fault::kRemoveWorker: return "worker removed (elastic)";
    case Fault::kPartition: return "host link cut 4 s";
  }
  return "?";
}

struct ScheduledFault {
  Fault kind;
  int at_step;  // injected once rank 0 reported this step
  int target;   // which worker or rank (0 or 1); the one left when the other was removed
};

std::vector<ScheduledFault> DrawSchedule(uint64_t seed, int faults) {
  std::mt19937_64 random(seed);
  std::vector<ScheduledFault> out;
  for (int i = 0; i < faults; ++i) {
    out.push_back({static_cast<Fault>(random() % kDrawnFaultKinds), static_cast<int>(4 + random() % (kSteps - 12)),
                   static_cast<int>(random() % 2)});
  }
  // Early, so that it happens before the stage ends whatever comes before it, and most of the
  // stage runs shrunk.
  if (ElasticSeed(seed)) {
    out.push_back({Fault::kRemoveWorker, static_cast<int>(8 + random() % 40), static_cast<int>(random() % 2)});
  }
  if (PartitionSeed(seed)) {
    out.push_back({Fault::kPartition, static_cast<int>(8 + random() % 40), static_cast<int>(random() % 2)});
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.at_step < b.at_step; });
  return out;
}


struct Outcome {
  bool succeeded = false;
  std::string final_model;  // path of model.safetensors
  std::string final_model_sha256;
  double wall_seconds = 0;
};

// Seconds from each fault to the first step of the next attempt (after a coordinator restart or a
// stall, which keep the attempt: to the next step; after a full disk, which keeps it too: to the
// first commit once the disk is freed), by fault kind, over every seed run.
std::map<std::string, std::vector<double>>& RecoveryTimes() {
  static std::map<std::string, std::vector<double>> times;
  return times;
}
std::vector<double>& LostShares() {
  static std::vector<double> shares;
  return shares;
}
// Faults drawn but not injected, with why.
std::map<std::string, int>& Skipped() {
  static std::map<std::string, int> skipped;
  return skipped;
}

std::string FinalModelPath(const PlanStatus& s) { return s.jobs(0).final_checkpoint().path() + "/model.safetensors"; }
std::string FinalModelSha(const PlanStatus& s) {
  absl::StatusOr<std::string> sha = Sha256File(FinalModelPath(s));
  return sha.ok() ? *sha : std::string("unreadable: ") + FinalModelPath(s);
}

loom::v1::ListCheckpointsResponse Checkpoints(Cluster& cluster, const std::string& id) {
  loom::v1::ListCheckpointsResponse list;
  const CommandResult r = cluster.Loom({"checkpoints", id, "--json"});
  if (r.exit_code == 0) (void)google::protobuf::util::JsonStringToMessage(r.out, &list);
  return list;
}

// Polls `status --json` until `done` holds or `timeout` passes (not a failure): the last status.
std::optional<PlanStatus> Poll(Cluster& cluster, const std::string& id,
                               const std::function<bool(const PlanStatus&)>& done, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  PlanStatus s;
  bool any = false;
  while (Clock::now() < until) {
    if (cluster.Status(id, &s)) {
      any = true;
      if (done(s)) return s;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return any ? std::optional<PlanStatus>(s) : std::nullopt;
}

// A coordinator and two workers of one slot each, running real ranks, the checkpoint root on a
// small disk of its own when this machine allows it.
// Members in the order they must go: the disk unmounted, the processes killed, the hosts removed.
struct ChaosCluster {
  std::unique_ptr<TestHosts> hosts;  // partition seeds: the coordinator on host 0, worker wI on host I
  std::unique_ptr<Cluster> cluster;
  std::unique_ptr<SmallDisk> disk;
};
ChaosCluster StartCluster(bool on_hosts = false) {
  ChaosCluster c;
  if (!on_hosts) UseMountNamespace(/*isolated=*/true);
  ClusterOptions options{.rank_binary = BinaryPath("worker/loom-rank"), .prepared_data = PreparedData()};
  if (on_hosts) {
    // The hosts have a /tmp of their own: keep the prepared data and the binaries visible there.
    c.hosts = std::make_unique<TestHosts>(
        4, std::vector<std::string>{std::filesystem::path(PreparedData()).parent_path().string(), BinaryPath("")});
    options.hosts = c.hosts.get();
  }
  c.cluster = std::make_unique<Cluster>(options);
  // The hosts' mount namespaces were made before a tmpfs could be mounted here: they would not see it.
  c.disk = on_hosts ? std::make_unique<SmallDisk>("full-disk faults skipped on test hosts (the hosts' mount "
                                                  "namespaces do not see this process's tmpfs)")
                    : std::make_unique<SmallDisk>(c.cluster->checkpoint_root(), DiskMiB());
  c.cluster->StartCoordinator();
  c.cluster->StartWorker("w1", 1, {}, on_hosts ? 1 : 0);
  c.cluster->StartWorker("w2", 1, {}, on_hosts ? 2 : 0);
  // A spare, where the job goes when a host is cut off.
  if (on_hosts) c.cluster->StartWorker("w3", 1, {}, 3);
  return c;
}

// The committed checkpoints of `attempt`, by path: their manifest's inode and modification time,
// which nothing a replaced attempt does may change.
std::map<std::string, std::pair<ino_t, int64_t>> CommittedFiles(const loom::v1::ListCheckpointsResponse& list,
                                                                int attempt) {
  std::map<std::string, std::pair<ino_t, int64_t>> files;
  for (const auto& c : list.checkpoints()) {
    struct stat st {};
    if (c.attempt() != attempt || stat((c.path() + "/manifest.json").c_str(), &st) != 0) continue;
    files[c.path()] = {st.st_ino, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec};
  }
  return files;
}

Outcome RunUndisturbed() {
  ChaosCluster started = StartCluster();
  Cluster& cluster = *started.cluster;
  const auto start = Clock::now();
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml", /*elastic=*/false));
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(300));
  Outcome o;
  o.wall_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  o.succeeded = s.state() == loom::v1::PLAN_STATE_SUCCEEDED;
  o.final_model_sha256 = FinalModelSha(s);
  EXPECT_TRUE(o.succeeded) << cluster.Logs();
  // Kept for the comparisons within a tolerance: copied out of the cluster's directory.
  o.final_model = absl::StrCat(std::filesystem::temp_directory_path().string(), "/loom-chaos-", getpid(),
                               "-model.safetensors");
  std::error_code ec;
  std::filesystem::copy_file(FinalModelPath(s), o.final_model, std::filesystem::copy_options::overwrite_existing, ec);
  return o;
}

// The reference of every seed, elastic or not: `parallel.elastic` changes where an attempt may
// run, not what it computes, so an elastic seed whose layout never changed must match it bitwise.
const Outcome& Undisturbed() {
  static const Outcome outcome = RunUndisturbed();
  return outcome;
}

std::string Replay(uint64_t seed) {
  return absl::StrCat("LOOM_CHAOS_SEEDS=", seed, " ", BinaryPath("tests/chaos/chaos_test"));
}

void RunSeed(uint64_t seed, int faults) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, "; replay: ", Replay(seed)));
  const bool elastic = ElasticSeed(seed);
  const Outcome& reference = Undisturbed();
  ASSERT_TRUE(reference.succeeded);
  if (std::string why; PartitionSeed(seed) && !TestHosts::Available(&why)) {
    std::printf("seed %llu (partition, needs test hosts): skipped: %s\n", static_cast<unsigned long long>(seed),
                why.c_str());
    ++Skipped()[absl::StrCat("partition seeds: ", why)];
    return;
  }
  UseMountNamespace(/*isolated=*/!PartitionSeed(seed));
  ChaosCluster started = StartCluster(PartitionSeed(seed));
  if (PartitionSeed(seed)) {
    ASSERT_EQ(started.hosts->size(), 4);
  }
  Cluster& cluster = *started.cluster;
  SmallDisk& disk = *started.disk;
  const auto start = Clock::now();
  const std::string id = cluster.Submit(WritePlan(cluster.dir() + "/plan.yaml", elastic));
  std::map<std::string, loom::v1::CheckpointInfo> seen;  // committed before some fault, by path
  std::set<std::string> corrupted;  // by the harness: loadable only if never read since (a race)
  std::string removed;              // the worker removed for good (elastic seeds)
  std::string log = "  schedule:";
  const std::vector<ScheduledFault> schedule = DrawSchedule(seed, faults);
  for (const ScheduledFault& f : schedule) absl::StrAppend(&log, " ", Name(f.kind), " at step ", f.at_step, ";");
  log += "\n";
  for (const ScheduledFault& f : schedule) {
    const PlanStatus before = cluster.WaitForPlan(
        id, [&](const PlanStatus& s) { return Ended(s) || s.jobs(0).progress().step() >= f.at_step; },
        std::chrono::seconds(300));
    if (Ended(before)) break;
    const loom::v1::ListCheckpointsResponse committed = Checkpoints(cluster, id);
    for (const auto& c : committed.checkpoints()) seen[c.path()] = c;
    const int attempt = before.jobs(0).attempt();
    const int64_t step = before.jobs(0).progress().step();
    // The target, or the one left once the other worker was removed (dp 1: rank 0 only).
    const int target = removed.empty() ? f.target : (removed == "w1" ? 1 : 0);
    const std::string worker = target == 0 ? "w1" : "w2";
    const int rank_index = std::min(f.target, std::max(1, before.jobs(0).rank_workers_size()) - 1);
    const std::string rank = absl::StrCat("core#", attempt, "/rank", rank_index, "/");
    std::string what = Name(f.kind);
    if (f.kind == Fault::kKillRank || f.kind == Fault::kStopRank) absl::StrAppend(&what, " (rank ", rank_index, ")");
    if (f.kind == Fault::kKillWorker || f.kind == Fault::kStopWorker || f.kind == Fault::kRemoveWorker) {
      absl::StrAppend(&what, " (", worker, ")");
    }
    absl::StrAppend(&log, "  step ", step, ": ", what, "\n");
    const auto fault_time = Clock::now();
    int64_t committed_step = before.jobs(0).last_checkpoint().step();  // full disk: recovered past this
    switch (f.kind) {
      case Fault::kKillWorker:
        cluster.KillWorker(worker, SIGKILL);
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        cluster.StartWorker(worker, 1);
        break;
      case Fault::kRemoveWorker:
        cluster.KillWorker(worker, SIGKILL);
        removed = worker;
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
      case Fault::kPartition: {
        // The host of the targeted rank's worker loses its link for longer than the heartbeat
        // timeout (2 s): the job moves to the spare, and the cut-off attempt is fenced.
        const std::string victim = before.jobs(0).rank_workers(rank_index);
        const int host = std::stoi(victim.substr(1));
        absl::StrAppend(&log, "    ", victim, " on host ", host, " cut off\n");
        int64_t cut_step = 0;  // the newest step the cut-off attempt committed before the cut
        const loom::v1::ListCheckpointsResponse at_cut = Checkpoints(cluster, id);
        for (const auto& c : at_cut.checkpoints()) {
          if (c.attempt() == attempt) cut_step = std::max(cut_step, c.step());
        }
        started.hosts->SetLink(host, false);
        const PlanStatus moved = cluster.WaitForPlan(
            id, [&](const PlanStatus& s) { return Ended(s) || s.jobs(0).progress().rank().attempt() > attempt; },
            std::chrono::seconds(120));
        RecoveryTimes()[Name(f.kind)].push_back(std::chrono::duration<double>(Clock::now() - fault_time).count());
        // Cut off for 4 s in all (at least until the new attempt runs), then back.
        std::this_thread::sleep_until(fault_time + std::chrono::seconds(4));
        const loom::v1::ListCheckpointsResponse at_return = Checkpoints(cluster, id);
        const auto new_attempt_files = CommittedFiles(at_return, moved.jobs(0).attempt());
        started.hosts->SetLink(host, true);
        // Back on the network: the worker registers again and its stale rank is aborted (or fenced).
        const std::string stale_log =
            absl::StrCat(cluster.work_dir(victim), "/", id, "/core#", attempt, "/rank", rank_index, "/rank.log");
        const auto until = Clock::now() + std::chrono::seconds(30);
        bool gone = false;
        while (!gone && Clock::now() < until) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          gone = cluster.worker(victim)->log().find(absl::StrCat("core#", attempt, "/rank", rank_index, ": exited")) !=
                 std::string::npos;
        }
        EXPECT_TRUE(gone) << "the cut-off worker's stale rank of attempt " << attempt
                          << " did not exit within 30 s of the link coming back\n"
                          << cluster.worker(victim)->log() << ReadAll(stale_log);
        absl::StrAppend(&log, "    link back; stale rank of attempt ", attempt, gone ? " gone" : " STILL RUNNING", "\n");
        // Fencing: nothing the stale attempt did changed what the new one committed, and it
        // committed nothing after the cut.
        const loom::v1::ListCheckpointsResponse after_return = Checkpoints(cluster, id);
        const auto files_now = CommittedFiles(after_return, moved.jobs(0).attempt());
        for (const auto& [path, file] : new_attempt_files) {
          if (files_now.contains(path)) {
            EXPECT_EQ(files_now.at(path), file) << "rewritten after the cut: " << path;
          }
        }
        for (const auto& c : after_return.checkpoints()) {
          // (One interval of grace: its ranks' reports may have reached the coordinator just before.)
          EXPECT_FALSE(c.attempt() == attempt && c.step() > cut_step + 5)
              << "the cut-off attempt " << attempt << " committed step " << c.step() << " after the cut";
        }
        continue;
      }
      case Fault::kFullDisk: {
        if (!disk.mounted()) {
          absl::StrAppend(&log, "    skipped: ", disk.why_not(), "\n");
          std::printf("seed %llu: %s\n", static_cast<unsigned long long>(seed), disk.why_not().c_str());
          ++Skipped()[disk.why_not()];
          continue;
        }
        const int failures = before.jobs(0).checkpoint_save_failures();
        const std::string filled = disk.Fill();
        ASSERT_EQ(filled, "") << "could not fill the checkpoint disk";
        absl::StrAppend(&log, "    checkpoint disk full (", disk.Available(), " bytes free)\n");
        // Full until a save has failed (the next interval's, within 5 steps), and 5 steps more.
        std::optional<PlanStatus> full = Poll(
            cluster, id,
            [&](const PlanStatus& s) {
              return Ended(s) || s.jobs(0).attempt() != attempt || s.jobs(0).checkpoint_save_failures() > failures;
            },
            std::chrono::seconds(60));
        ASSERT_TRUE(full.has_value()) << "no status while the disk was full\n" << cluster.Logs();
        const bool failed_save = full->jobs(0).checkpoint_save_failures() > failures;
        std::optional<PlanStatus> later;
        // Not past the last step: the final save, tried 4 times over 7 s, would then fail the
        // attempt, as it should (the stage's result cannot be written).
        const int64_t hold_until = std::min<int64_t>(full->jobs(0).progress().step() + 5, kSteps);
        if (failed_save && !Ended(*full) && full->jobs(0).attempt() == attempt) {
          later = Poll(
              cluster, id,
              [&](const PlanStatus& s) {
                return Ended(s) || s.jobs(0).attempt() != attempt || s.jobs(0).progress().step() >= hold_until;
              },
              std::chrono::seconds(30));
        }
        disk.Free();
        absl::StrAppend(&log, "    freed; ", full->jobs(0).checkpoint_save_failures() - failures,
                        " failed save(s) reported: ", full->jobs(0).last_checkpoint_save_error(), "\n");
        if (failed_save && full->jobs(0).attempt() == attempt && !Ended(*full)) {
          // A failed save never stops training: the same attempt went on past it.
          EXPECT_NE(full->jobs(0).last_checkpoint_save_error().find("No space left on device"), std::string::npos)
              << full->jobs(0).DebugString();
          ASSERT_TRUE(later.has_value());
          if (later->jobs(0).attempt() == attempt) {
            EXPECT_GE(later->jobs(0).progress().step(), hold_until)
                << "training did not go on while the disk was full\n" << later->jobs(0).DebugString();
          } else {
            // The attempt ended while the disk was full. The final save (tried 4 times) may end it,
            // and so may something else (a stalled machine losing a worker); a save before the
            // final one must not: it costs that checkpoint only.
            const loom::v1::AttemptFailure& failure = later->jobs(0).last_failure();
            const bool final_save = failure.message().find(absl::StrFormat("step-%06d", kSteps)) != std::string::npos;
            EXPECT_FALSE(failure.cause() == "io" && !final_save)
                << "a failed save stopped training (a full disk cost an attempt)\n" << later->jobs(0).DebugString();
            absl::StrAppend(&log, "    attempt ", attempt, " ended while the disk was full (", failure.cause(),
                            "): ", failure.message(), "\n");
          }
        } else if (!failed_save) {
          // Only the final save falls due in the full disk's time (4 tries over 7 s): the attempt
          // fails and the next one saves again.
          EXPECT_TRUE(Ended(*full) || full->jobs(0).attempt() != attempt)
              << "no failed save reported while the disk was full\n" << full->jobs(0).DebugString();
        }
        committed_step = std::max(committed_step, full->jobs(0).last_checkpoint().step());
        break;
      }
    }
    // Recovered: the first step of a later attempt (or, after a coordinator restart or stall that
    // keeps the attempt, the next step; after a full disk, the next commit).
    const PlanStatus after = cluster.WaitForPlan(
        id,
        [&](const PlanStatus& s) {
          const auto& p = s.jobs(0).progress();
          if (Ended(s) || p.rank().attempt() > attempt) return true;
          switch (f.kind) {
            case Fault::kKillCoordinator:
            case Fault::kStopCoordinator:
            case Fault::kStopWorker: return p.step() > step;
            case Fault::kFullDisk: return s.jobs(0).last_checkpoint().step() > committed_step;
            default: return false;
          }
        },
        std::chrono::seconds(300));
    RecoveryTimes()[Name(f.kind)].push_back(std::chrono::duration<double>(Clock::now() - fault_time).count());
    if (f.kind == Fault::kRemoveWorker && !Ended(after)) {
      absl::StrAppend(&log, "    attempt ", after.jobs(0).attempt(), " on ", after.jobs(0).rank_workers_size(),
                      " rank(s)\n");
    }
    if (Ended(after)) break;
  }
  const PlanStatus end = cluster.WaitForPlan(id, Ended, std::chrono::seconds(300));
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  LostShares().push_back(std::max(0.0, (wall - reference.wall_seconds) / wall));
  // The layout changed when an attempt ran shrunk (the coordinator says so when it places one).
  const std::string coordinator_log = ReadAll(cluster.dir() + "/coordinator.log");
  const bool shrunk = coordinator_log.find("(elastic: dp 1 of 2") != std::string::npos;
  std::string comparison;
  bool model_ok = false;
  ModelDifference difference;
  if (FinalModelSha(end) == reference.final_model_sha256) {
    comparison = "bitwise equal to the undisturbed run's";
    model_ok = true;
  } else if (shrunk) {
    difference = CompareModels(FinalModelPath(end), reference.final_model);
    model_ok = difference.close(kElasticTolerance);
    comparison = absl::StrCat("layout changed (elastic dp 1 of 2): compared within ", kElasticTolerance, ": ",
                              difference.ToString(), model_ok ? "" : " (too far)");
  } else {
    comparison = "layout unchanged: compared bitwise: DIFFERENT";
  }
  std::printf("seed %llu%s: %s in %.1f s (undisturbed %.1f s), %d attempts; final model %s\n%s",
              static_cast<unsigned long long>(seed), elastic ? " (elastic)" : "",
              loom::v1::PlanState_Name(end.state()).c_str(), wall, reference.wall_seconds, end.jobs(0).attempt(),
              comparison.c_str(), log.c_str());
  for (const auto& t : end.jobs(0).transitions()) {
    if (t.to_state() == loom::v1::JOB_STATE_RECOVERING) std::printf("    attempt %d: %s\n", t.attempt(), t.reason().c_str());
  }
  if (const char* keep = std::getenv("LOOM_CHAOS_LOGS"); keep != nullptr && *keep != '\0') {
    std::ofstream(absl::StrCat(keep, "/chaos-seed-", seed, ".log")) << log << cluster.Logs();
  }
  ASSERT_EQ(end.state(), loom::v1::PLAN_STATE_SUCCEEDED) << log << cluster.Logs();
  EXPECT_TRUE(model_ok) << "the final model differs from the undisturbed run's: " << comparison << "\n" << log;
  if (!removed.empty()) {
    EXPECT_TRUE(shrunk) << "worker " << removed << " was removed for good, yet no attempt ran on dp 1\n" << log;
  }
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
    if (!listed.contains(path)) {
      EXPECT_FALSE(std::filesystem::exists(path)) << "retired but still on disk: " << path;
    }
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
  // Before any cluster starts (and while this process has one thread).
  if (const std::string& why = PrivateMountNamespace(); !why.empty()) std::printf("%s\n", why.c_str());
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
  for (const auto& [why, count] : Skipped()) std::printf("skipped %d time(s): %s\n", count, why.c_str());
  // What this process made outside its clusters' directories.
  std::filesystem::remove(Undisturbed().final_model);
  const std::filesystem::path prepared = std::filesystem::path(PreparedData()).parent_path();
  std::filesystem::remove_all(prepared);
  std::filesystem::remove(prepared.string() + ".log");
  std::vector<double>& lost = LostShares();
  std::sort(lost.begin(), lost.end());
  if (!lost.empty()) {
    std::printf("wall time lost against the undisturbed run (%.1f s): median %.0f%%, max %.0f%% over %zu seeds\n",
                Undisturbed().wall_seconds, 100 * lost[lost.size() / 2], 100 * lost.back(), lost.size());
  }
}

}  // namespace
}  // namespace loom::testing
