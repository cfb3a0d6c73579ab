// Data and tensor parallelism over Gloo with real processes on loopback: dp=2, dp=4, tp=2 and
// dp=2×tp=2 reproduce the single-process losses and weights, dp with and without ZeRO-1 (optimizer
// state sharded across the ranks: reduce-scatter, update a chunk, all-gather); checkpoints hold
// the whole state, so a ZeRO-1 checkpoint resumes without ZeRO-1 and a dp=2×tp=2 checkpoint
// resumes in one process or under tp=2 alone; and a rank that dies makes its peers fail, not hang.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "run_command.h"

namespace {
namespace fs = std::filesystem;

struct RunOutput {
  std::vector<double> losses;
  std::vector<float> weights;
};

RunOutput ReadOutput(const std::string& path) {
  RunOutput r;
  std::ifstream in(path, std::ios::binary);
  for (std::string line; std::getline(in, line) && line != "weights";) r.losses.push_back(std::stod(line));
  const std::string rest((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  r.weights.resize(rest.size() / sizeof(float));
  std::memcpy(r.weights.data(), rest.data(), rest.size());
  return r;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/dp_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Launches `size` ranks in the background and waits for all; returns each rank's exit code.
std::vector<int> RunGroup(const std::string& dir, int size, const std::string& extra = "",
                          const std::string& extra_rank1 = "") {
  std::string script;
  for (int r = 0; r < size; ++r) {
    script += absl::StrCat(DP_RANK_BINARY, " --rank ", r, " --size ", size, " --store ", dir, "/store --out ",
                           dir, "/rank", r, ".out ", extra, r == 1 ? " " + extra_rank1 : "", " > ", dir,
                           "/rank", r, ".log 2>&1 & pids[", r, "]=$!\n");
  }
  script += "for p in ${pids[@]}; do wait $p; echo \"exit $?\"; done\n";
  std::ofstream(dir + "/run.sh") << script;
  const auto result = loom::testing::RunCommand("bash " + dir + "/run.sh");
  std::vector<int> codes;
  std::istringstream in(result.output);
  for (std::string word; in >> word;)
    if (word != "exit") codes.push_back(std::stoi(word));
  return codes;
}

double RelativeNormDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double{a[i]} - b[i]) * (double{a[i]} - b[i]);
    norm += double{b[i]} * b[i];
  }
  return std::sqrt(diff / norm);
}

// Runs `size` ranks with `flags` and compares every rank's losses and whole weights with one
// process's (run with `single_flags`).
void ExpectMatchesSingleProcess(const std::string& name, int size, const std::string& flags = "",
                                const std::string& single_flags = "") {
  const std::string single = FreshDir("single_for_" + name);
  ASSERT_EQ(RunGroup(single, 1, single_flags), std::vector<int>{0});
  const RunOutput reference = ReadOutput(single + "/rank0.out");
  ASSERT_EQ(reference.losses.size(), 20u);

  const std::string dir = FreshDir(name);
  ASSERT_EQ(RunGroup(dir, size, flags), std::vector<int>(size, 0)) << "see " << dir << "/rank*.log";
  for (int r = 0; r < size; ++r) {
    const RunOutput out = ReadOutput(absl::StrCat(dir, "/rank", r, ".out"));
    ASSERT_EQ(out.losses.size(), reference.losses.size());
    for (size_t i = 0; i < out.losses.size(); ++i)
      EXPECT_NEAR(out.losses[i], reference.losses[i], 1e-4 * std::abs(reference.losses[i]))
          << "rank " << r << " step " << i + 1;
    ASSERT_EQ(out.weights.size(), reference.weights.size());
    EXPECT_LT(RelativeNormDiff(out.weights, reference.weights), 1e-3) << "rank " << r;
  }
  // The loss really moved: the comparison is not between two untrained models.
  EXPECT_LT(reference.losses.back(), reference.losses.front() - 1.0);
}

// dp=2 all-reduces in buckets of 4Ki floats beside the backward pass (the tiny model is ~20 of
// them); dp=4 in one all-reduce after it.
TEST(DataParallel, TwoRanksReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp2", 2, "--bucket-floats 4096");
}
TEST(DataParallel, FourRanksReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp4", 4, "--bucket-floats 0");
}
TEST(DataParallel, ZeroOneTwoRanksReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp2_zero1", 2, "--zero1");
}
TEST(DataParallel, ZeroOneFourRanksReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp4_zero1", 4, "--zero1");
}
TEST(TensorParallel, TwoRanksReproduceTheSingleProcessRun) { ExpectMatchesSingleProcess("tp2", 2, "--tp 2"); }
TEST(TensorParallel, TwoByTwoWithDataParallelReproducesTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp2_tp2", 4, "--tp 2");
}

TEST(PipelineParallel, TwoStagesOfFourMicroBatchesReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("pp2", 2, "--pp 2");
}
TEST(PipelineParallel, TwoByTwoWithDataParallelReproducesTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp2_pp2", 4, "--pp 2");
}

// All three at once: each pipeline stage split across a tensor group, and data parallel on top.
TEST(ThreeDimensionalParallel, TpTwoByPpTwoReproducesTheSingleProcessRun) {
  ExpectMatchesSingleProcess("tp2_pp2", 4, "--tp 2 --pp 2");
}
TEST(ThreeDimensionalParallel, DpTwoByTpTwoByPpTwoReproducesTheSingleProcessRun) {
  ExpectMatchesSingleProcess("dp2_tp2_pp2", 8, "--tp 2 --pp 2");
}
// A tied embedding: the first stage's and the last stage's copies, each split by vocabulary.
TEST(ThreeDimensionalParallel, TiedEmbeddingsUnderTpTwoByPpTwoReproduceTheSingleProcessRun) {
  ExpectMatchesSingleProcess("tied_tp2_pp2", 4, "--tp 2 --pp 2 --tied", "--tied");
}

TEST(TensorParallel, ADpTwoTpTwoCheckpointResumesInOneProcessUnderTpTwoAndUnderPpTwo) {
  const std::string dir = FreshDir("dp2_tp2_save");
  ASSERT_EQ(RunGroup(dir, 4, "--tp 2 --checkpoint-dir " + dir + "/ckpt --checkpoint-at 10"), std::vector<int>(4, 0))
      << "see " << dir << "/rank*.log";
  const RunOutput straight = ReadOutput(dir + "/rank0.out");
  ASSERT_EQ(straight.losses.size(), 20u);
  std::vector<double> first_losses;
  for (const auto& [name, size, flags] : {std::tuple<std::string, int, std::string>{"single", 1, ""},
                                          {"tp2", 2, "--tp 2"},
                                          {"pp2", 2, "--pp 2"}}) {
    const std::string resumed_dir = FreshDir("dp2_tp2_resumed_" + name);
    ASSERT_EQ(RunGroup(resumed_dir, size, flags + " --resume " + dir + "/ckpt/step-000010"),
              std::vector<int>(size, 0))
        << "see " << resumed_dir << "/rank*.log";
    const RunOutput resumed = ReadOutput(resumed_dir + "/rank0.out");
    ASSERT_EQ(resumed.losses.size(), 10u) << name;
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_NEAR(resumed.losses[i], straight.losses[10 + i], 1e-4 * std::abs(straight.losses[10 + i]))
          << name << " step " << 11 + i;
    }
    EXPECT_LT(RelativeNormDiff(resumed.weights, straight.weights), 1e-3) << name;
    first_losses.push_back(resumed.losses[0]);
  }
  // The loaded weights are the saved ones exactly: one process and two pipeline stages (the same
  // arithmetic) compute the same logits, so the first loss after loading is the same double.
  EXPECT_EQ(first_losses[2], first_losses[0]) << "pp=2 vs one process, step 11";
}

TEST(DataParallel, AZeroOneCheckpointResumesWithoutZeroOne) {
  const std::string dir = FreshDir("zero1_resume");
  ASSERT_EQ(RunGroup(dir, 2, "--zero1 --checkpoint-dir " + dir + "/ckpt --checkpoint-at 10"), std::vector<int>(2, 0))
      << "see " << dir << "/rank*.log";
  const RunOutput straight = ReadOutput(dir + "/rank0.out");
  const std::string resumed_dir = FreshDir("zero1_resumed");
  ASSERT_EQ(RunGroup(resumed_dir, 2, "--resume " + dir + "/ckpt/step-000010"), std::vector<int>(2, 0))
      << "see " << resumed_dir << "/rank*.log";
  const RunOutput resumed = ReadOutput(resumed_dir + "/rank0.out");
  ASSERT_EQ(straight.losses.size(), 20u);
  ASSERT_EQ(resumed.losses.size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_NEAR(resumed.losses[i], straight.losses[10 + i], 1e-5 * std::abs(straight.losses[10 + i])) << "step " << 11 + i;
  }
  EXPECT_LT(RelativeNormDiff(resumed.weights, straight.weights), 1e-5);
}

TEST(DataParallel, ALostRankMakesItsPeerFailWithinTheTimeout) {
  const std::string dir = FreshDir("lost");
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> codes = RunGroup(dir, 2, "--timeout 5s", "--fail-at-step 4");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(codes.size(), 2u);
  EXPECT_EQ(codes[1], 3);
  EXPECT_EQ(codes[0], 1) << "the surviving rank must fail, not finish or hang";
  EXPECT_LT(seconds, 15);
  std::ifstream log(dir + "/rank0.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("step 4"), std::string::npos) << text;
}

}  // namespace
