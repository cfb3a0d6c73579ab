// loom-rank on its own, fed an Assignment the way the worker daemon feeds it, read through the
// real progress stream (RankMessageReader): the batch ramp changes the global batch exactly at its
// token boundaries, the realised source shares follow the mix before and after its change, held-out
// evaluation is reported on schedule, and the final checkpoint is reported.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "tests/integration/cluster_harness.h"
#include "tests/integration/prepared_data.h"
#include "worker/rank_protocol.h"

extern char** environ;

namespace loom::testing {
namespace {

constexpr char kPlan[] = R"(name: ramp
seed: 5
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: core
    kind: pretrain
    tokens: 24Ki
    optimizer: {lr: 3e-3}
    parallel: {dp: 1, micro_batch_size: 4}
    batch_ramp:
      - {at_tokens: 0, global_batch_tokens: 512}
      - {at_tokens: 4Ki, global_batch_tokens: 1Ki}
      - {at_tokens: 12Ki, global_batch_tokens: 2Ki}
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix:
      - {at_tokens: 0, weights: {math: 0.8, code: 0.2}}
      - {at_tokens: 12Ki, weights: {math: 0.2, code: 0.8}}
    checkpoint: {every_steps: 0}
    eval: {every_steps: 10, sets: [math, code], max_tokens: 2Ki}
)";

int64_t Expected(int64_t tokens_before) {
  return tokens_before < 4096 ? 512 : tokens_before < 12288 ? 1024 : 2048;
}

// Runs loom-rank on `assignment`; returns every message it reported and its exit code.
std::vector<loom::v1::WorkerMessage> RunRank(const loom::v1::Assignment& assignment, const std::string& dir,
                                             int* exit_code) {
  const std::string path = dir + "/assignment.pb";
  EXPECT_TRUE(WriteAssignment(path, assignment).ok());
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  const std::string log = dir + "/rank.log";
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.push_back(std::string(kReportFdEnv) + "=" + std::to_string(fds[1]));
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string binary = BinaryPath("worker/loom-rank"), flag = "--assignment", file = path;
  char* argv[] = {binary.data(), flag.data(), file.data(), nullptr};
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv, envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  std::vector<loom::v1::WorkerMessage> messages;
  RankMessageReader reader(fds[0]);
  while (true) {
    auto next = reader.Next();
    if (!next.ok() || !next->has_value()) break;
    messages.push_back(**next);
  }
  int status = 0;
  if (pid > 0) waitpid(pid, &status, 0);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (*exit_code != 0) ADD_FAILURE() << ReadAll(log);
  return messages;
}

// The Assignment the coordinator would send for stage 0 of `plan_text` (one rank).
loom::v1::Assignment AssignmentFor(const std::string& plan_text, const std::string& dir) {
  ParsedPlan parsed = ParsePlanText(plan_text, PlanFormat::kYaml);
  EXPECT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  loom::v1::Assignment a;
  a.mutable_rank()->set_job_id(parsed.plan.name() + "-1/" + parsed.plan.stages(0).name());
  a.mutable_rank()->set_attempt(1);
  a.set_plan_id(parsed.plan.name() + "-1");
  *a.mutable_stage() = ResolveStage(parsed.plan, 0);
  *a.mutable_model() = parsed.plan.model();
  a.mutable_data()->set_dir(PreparedData());
  a.set_seed(a.stage().seed());
  a.mutable_layout()->set_world_size(1);
  a.mutable_layout()->set_dp(1);
  a.mutable_layout()->set_tp(1);
  a.mutable_layout()->set_pp(1);
  a.set_checkpoint_dir(dir + "/checkpoints");
  return a;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("loom-rank-progress-" + name)).string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(RankProgress, RampMixAndEvalFollowThePlanExactly) {
  const std::string dir = FreshDir("ramp");
  const loom::v1::Assignment a = AssignmentFor(kPlan, dir);

  int exit_code = -1;
  const std::vector<loom::v1::WorkerMessage> messages = RunRank(a, dir, &exit_code);
  ASSERT_EQ(exit_code, 0);

  std::vector<loom::v1::Progress> steps;
  std::vector<loom::v1::CheckpointReport> checkpoints;
  for (const auto& m : messages) {
    if (m.has_progress()) steps.push_back(m.progress());
    if (m.has_checkpoint()) checkpoints.push_back(m.checkpoint());
  }
  // 8 steps of 512, 8 of 1Ki, 6 of 2Ki, then the final report: the last step again, with where
  // the rank's time went up to its end (Progress.rank_time, for the goodput ledger).
  ASSERT_EQ(steps.size(), 23u);
  const loom::v1::Progress final_report = steps.back();
  steps.pop_back();
  EXPECT_EQ(final_report.step(), steps.back().step());
  EXPECT_EQ(final_report.step_seconds(), 0);  // no step of its own
  EXPECT_GT(final_report.rank_time().load_seconds(), 0);
  EXPECT_GT(final_report.rank_time().compute_seconds(), steps.front().rank_time().compute_seconds());
  EXPECT_GT(final_report.rank_time().checkpoint_save_seconds(), steps.back().rank_time().checkpoint_save_seconds());
  int64_t tokens = 0;
  std::map<std::string, int64_t> drawn, at_boundary;
  std::vector<int64_t> eval_steps;
  for (const auto& p : steps) {
    EXPECT_EQ(p.global_batch_tokens(), Expected(tokens)) << "step " << p.step() << " starting at " << tokens;
    tokens += p.global_batch_tokens();
    EXPECT_EQ(p.tokens(), tokens);
    EXPECT_EQ(p.seq_len(), 64);
    // Tokens drawn per source add up to the tokens consumed.
    int64_t sum = 0;
    for (const auto& [source, n] : p.source_tokens()) sum += n;
    EXPECT_EQ(sum, p.tokens()) << "step " << p.step();
    drawn = {p.source_tokens().begin(), p.source_tokens().end()};
    if (p.tokens() == 12288) at_boundary = drawn;
    // The weights in force after the step: the second entry from 12Ki on.
    EXPECT_NEAR(p.mix_weights().at("math"), p.tokens() < 12288 ? 0.8 : 0.2, 1e-12) << "step " << p.step();
    if (!p.eval_loss().empty()) {
      eval_steps.push_back(p.step());
      for (const char* set : {"math", "code"}) {
        ASSERT_TRUE(p.eval_loss().contains(set)) << p.DebugString();
        EXPECT_GT(p.eval_loss().at(set), 0.5);
        EXPECT_LT(p.eval_loss().at(set), std::log(512.0) + 1);
      }
    }
  }
  // Realised shares on each side of the mix change (192 sequences each).
  ASSERT_FALSE(at_boundary.empty());
  EXPECT_NEAR(at_boundary["math"] / 12288.0, 0.8, 0.02);
  EXPECT_NEAR((drawn["math"] - at_boundary["math"]) / 12288.0, 0.2, 0.02);
  EXPECT_EQ(eval_steps, (std::vector<int64_t>{10, 20, 22}));
  ASSERT_EQ(checkpoints.size(), 1u);
  EXPECT_TRUE(checkpoints[0].final());
  EXPECT_EQ(checkpoints[0].step(), 22);
  EXPECT_EQ(checkpoints[0].num_shards(), 1);
}

TEST(RankProgress, ContextExtensionReportsShortAndLongLengthsBeforeAndAfter) {
  const std::string dir = FreshDir("context");
  // The checkpoint the stage starts from: one step at a negligible learning rate, so as good as
  // freshly initialised.
  const std::string init_plan = dir + "/init.yaml";
  std::ofstream(init_plan) << R"(name: init
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: init
    kind: pretrain
    tokens: 1Ki
    optimizer: {lr: 1e-9}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
)";
  const std::string init_command = BinaryPath("cli/loom") + " train-local " + init_plan + " --data " +
                                   PreparedData() + " --steps 1 --out " + dir + "/init > " + dir + "/init.log 2>&1";
  ASSERT_EQ(std::system(init_command.c_str()), 0) << ReadAll(dir + "/init.log");
  const std::string from = dir + "/init/step-000001";
  loom::v1::Assignment a = AssignmentFor(R"(name: ctx
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 512}
stages:
  - name: longer
    kind: context_extension
    from: )" + from + R"(
    tokens: 16Ki
    rope: {theta: 100000}
    optimizer: {lr: 3e-3}
    parallel: {dp: 1, micro_batch_size: 2}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 1Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 128}, {at_tokens: 8Ki, seq_len: 256}]
    data_mix: [{at_tokens: 0, weights: {math: 1}}]
    checkpoint: {every_steps: 0}
    eval: {sets: [math], max_tokens: 1Ki}
)",
                                         dir);
  a.mutable_inputs()->set_from(from);  // as the coordinator resolves a path reference
  int exit_code = -1;
  const std::vector<loom::v1::WorkerMessage> messages = RunRank(a, dir, &exit_code);
  ASSERT_EQ(exit_code, 0);
  ASSERT_GE(messages.size(), 2u);
  const loom::v1::Progress& before = messages.front().progress();
  EXPECT_EQ(before.step(), 0);
  const loom::v1::Progress* after = nullptr;
  for (const auto& m : messages)
    if (m.has_progress()) after = &m.progress();
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->step(), 16);
  for (const char* key : {"math@128", "math@256"}) {
    ASSERT_TRUE(before.eval_loss().contains(std::string(key) + "/before")) << before.DebugString();
    ASSERT_TRUE(after->eval_loss().contains(key)) << after->DebugString();
    // From random initialisation the stage can only help, at both lengths.
    EXPECT_LT(after->eval_loss().at(key), before.eval_loss().at(std::string(key) + "/before") - 1.0) << key;
  }
}

}  // namespace
}  // namespace loom::testing
