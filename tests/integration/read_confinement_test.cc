// Ranks confine their reads of plan-named files to the coordinator's roots, on real processes
// (loom-coordinator, loom-worker, loom-rank): a plan whose data the coordinator accepted at submit
// fails when, before a worker reads it, a directory or a file inside the root was swapped for a
// symlink to a copy outside the roots (the job fails as a plan fault, not retried, with the path
// and "outside" in its reason); the same plan on unswapped data trains to its final checkpoint.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"

namespace loom::testing {
namespace {

namespace fs = std::filesystem;
using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// A tiny pretrain stage (4 steps of 512 tokens) on `data_dir`'s math shards.
std::string WritePlan(const std::string& path, const std::string& name, const std::string& data_dir) {
  std::ofstream(path) << "name: " << name << R"(
model: {layers: 1, d_model: 32, heads: 2, kv_heads: 1, ffn_size: 64, vocab_size: 512}
data: {dir: )" << data_dir
                      << R"(}
stages:
  - name: core
    kind: pretrain
    tokens: 2Ki
    parallel: {dp: 1, micro_batch_size: 2}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
)";
  return path;
}

void ExpectRefusedAtTheRead(const PlanStatus& s, const std::string& path, const std::string& logs) {
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_FAILED) << logs;
  const loom::v1::JobStatus& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 1) << "a plan fault is not retried: " << core.DebugString();
  EXPECT_EQ(core.last_failure().failure_class(), loom::v1::FAILURE_CLASS_PLAN) << core.DebugString();
  EXPECT_NE(core.reason().find(path), std::string::npos) << core.reason();
  EXPECT_NE(core.reason().find("is outside the read roots"), std::string::npos) << core.reason();
}

TEST(ReadConfinement, ASymlinkSwappedInAfterSubmitIsRefusedWhereTheRankReads) {
  const std::string prepared = PrepareData("confine", "math", 512);
  Cluster cluster({.rank_binary = BinaryPath("worker/loom-rank")});
  // Outside every root of the cluster (its directory and the prepared data's parent).
  const std::string outside =
      (fs::temp_directory_path() / ("loom-outside-" + std::to_string(::getpid()))).string();
  fs::remove_all(outside);
  fs::create_directories(outside);
  fs::copy(prepared, outside + "/data", fs::copy_options::recursive);
  // Two copies of the data inside the cluster's directory, accepted as they are at submit.
  const std::string dir_swapped = cluster.dir() + "/dir-swapped",
                    file_swapped = cluster.dir() + "/file-swapped";
  fs::copy(prepared, dir_swapped, fs::copy_options::recursive);
  fs::copy(prepared, file_swapped, fs::copy_options::recursive);

  cluster.StartCoordinator();  // no worker yet: nothing is read before the swaps
  const std::string a = cluster.Submit(WritePlan(cluster.dir() + "/a.yaml", "dir-swapped", dir_swapped));
  const std::string b = cluster.Submit(WritePlan(cluster.dir() + "/b.yaml", "file-swapped", file_swapped));
  const std::string c = cluster.Submit(WritePlan(cluster.dir() + "/c.yaml", "unswapped", prepared));
  ASSERT_FALSE(a.empty() || b.empty() || c.empty());

  // The swaps: the math source directory, and the tokenizer file, each for a symlink to an
  // identical copy outside the roots (so confinement is the only reason to fail).
  fs::remove_all(dir_swapped + "/math");
  fs::create_directory_symlink(outside + "/data/math", dir_swapped + "/math");
  fs::remove(file_swapped + "/tokenizer.model");
  fs::create_symlink(outside + "/data/tokenizer.model", file_swapped + "/tokenizer.model");

  cluster.StartWorker("w1", 3);
  ExpectRefusedAtTheRead(cluster.WaitForPlan(a, Ended, std::chrono::seconds(60)), dir_swapped + "/math/train",
                         cluster.Logs());
  ExpectRefusedAtTheRead(cluster.WaitForPlan(b, Ended, std::chrono::seconds(60)),
                         file_swapped + "/tokenizer.model", cluster.Logs());
  const PlanStatus trained = cluster.WaitForPlan(c, Ended, std::chrono::seconds(60));
  ASSERT_EQ(trained.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_TRUE(trained.jobs(0).final_checkpoint().final()) << trained.jobs(0).DebugString();
  EXPECT_EQ(trained.jobs(0).progress().tokens(), 2048) << trained.jobs(0).DebugString();
  // The worker outlived its ranks' refusals.
  EXPECT_TRUE(cluster.worker("w1")->running()) << cluster.Logs();
  fs::remove_all(outside);
}

}  // namespace
}  // namespace loom::testing
