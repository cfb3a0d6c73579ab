// The single-process trainer: it learns, it is deterministic, and a resumed run equals an
// uninterrupted one bit for bit.
#include "worker/engine/training/trainer.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "common/rank_exit.h"
#include "engine_test_util.h"
#include "worker/engine/model/checkpoint.h"

namespace loom::engine {
namespace {

using loom::testing::RepetitiveText;
using loom::testing::TinyPlan;

std::vector<int32_t> Bytes(const std::string& text) { return std::vector<int32_t>(text.begin(), text.end()); }

constexpr char kStage[] = R"(    tokens: 100K
    optimizer: {lr: 3e-3, weight_decay: 0.01}
    lr_schedule: {type: cosine, warmup_tokens: 4Ki, min_lr_ratio: 0.1}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
    checkpoint: {every_steps: 5, keep_last: 0}
)";

TrainerOptions Options(const loom::v1::TrainingPlan& plan, const std::string& checkpoints = "") {
  TrainerOptions o;
  o.model = plan.model();
  o.stage = ResolveStage(plan, 0);
  o.plan_id = "tiny-1";
  o.checkpoint_dir = checkpoints;
  return o;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/trainer_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

// Runs `steps` steps and returns the per-step losses.
std::vector<double> Train(Trainer& trainer, int steps) {
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    auto r = trainer.Step();
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) break;
    losses.push_back(r->loss);
  }
  return losses;
}

TEST(Trainer, LearnsRepetitiveText) {
  const auto plan = TinyPlan(kStage);
  TokenStreamSource data(Bytes(RepetitiveText()));
  auto trainer = Trainer::Create(Options(plan), &data);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  const std::vector<double> losses = Train(**trainer, 200);
  ASSERT_EQ(losses.size(), 200u);
  EXPECT_NEAR(losses.front(), std::log(256.0), 0.3);  // a random byte-level model starts near ln 256
  EXPECT_LT(losses.back(), 0.5) << "the loss did not fall well below its start (" << losses.front() << ")";
}

TEST(Trainer, SameSeedSameBits) {
  const auto plan = TinyPlan(kStage);
  std::vector<std::vector<double>> runs;
  std::vector<std::vector<float>> weights;
  for (int run = 0; run < 2; ++run) {
    TokenStreamSource data(Bytes(RepetitiveText()));
    auto trainer = Trainer::Create(Options(plan), &data);
    ASSERT_TRUE(trainer.ok());
    runs.push_back(Train(**trainer, 8));
    Transformer& m = (*trainer)->model();
    weights.emplace_back(m.params(), m.params() + m.num_params());
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT_EQ(runs[0][i], runs[1][i]) << "step " << i + 1;
  EXPECT_EQ(0, std::memcmp(weights[0].data(), weights[1].data(), weights[0].size() * sizeof(float)));
}

TEST(Trainer, ResumedRunEqualsUninterruptedRunBitwise) {
  const auto plan = TinyPlan(kStage);
  const std::string dir = FreshDir("resume");
  // Uninterrupted: 12 steps, with checkpoints every 5.
  std::vector<double> full;
  std::vector<float> full_weights;
  {
    TokenStreamSource data(Bytes(RepetitiveText()));
    auto trainer = Trainer::Create(Options(plan, dir), &data);
    ASSERT_TRUE(trainer.ok());
    for (int i = 0; i < 12; ++i) {
      auto r = (*trainer)->Step();
      ASSERT_TRUE(r.ok());
      full.push_back(r->loss);
      if (r->step == 5) {
        ASSERT_TRUE((*trainer)->SaveCheckpoint(false).ok());
      }
    }
    Transformer& m = (*trainer)->model();
    full_weights.assign(m.params(), m.params() + m.num_params());
  }
  // Resumed from step 5 with a fresh data source: steps 6..12 repeat exactly.
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions options = Options(plan, dir);
  options.resume_from = dir + "/" + CheckpointDirName(5);
  auto trainer = Trainer::Create(options, &data);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->step(), 5);
  EXPECT_EQ((*trainer)->tokens(), 5 * 512);
  const std::vector<double> resumed = Train(**trainer, 7);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(resumed[i], full[5 + i]) << "step " << 6 + i;
  Transformer& m = (*trainer)->model();
  EXPECT_EQ(0, std::memcmp(m.params(), full_weights.data(), full_weights.size() * sizeof(float)));
}

// A checkpoint to resume from that is corrupt (a flipped byte) or incomplete (a file gone) is
// reported as such (exit 65), so the coordinator retires it and falls back to the one before; a
// corrupt checkpoint to start `from` is an input problem as before.
TEST(Trainer, ACorruptOrIncompleteCheckpointToResumeFromIsReportedAsBad) {
  const auto plan = TinyPlan(kStage);
  const std::string dir = FreshDir("bad_resume");
  {
    TokenStreamSource data(Bytes(RepetitiveText()));
    auto trainer = Trainer::Create(Options(plan, dir), &data);
    ASSERT_TRUE(trainer.ok());
    Train(**trainer, 2);
    ASSERT_TRUE((*trainer)->SaveCheckpoint(false).ok());
  }
  const std::string checkpoint = dir + "/" + CheckpointDirName(2);
  {
    std::fstream f(checkpoint + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x42');
  }
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions options = Options(plan, dir);
  options.resume_from = checkpoint;
  auto corrupt = Trainer::Create(options, &data);
  ASSERT_FALSE(corrupt.ok());
  EXPECT_EQ(RankExitCodeFor(corrupt.status()), kRankExitResumeCheckpointBad) << corrupt.status();
  EXPECT_NE(corrupt.status().message().find("model.safetensors"), std::string::npos) << corrupt.status();

  std::filesystem::remove(checkpoint + "/optimizer.safetensors");
  std::filesystem::remove(checkpoint + "/manifest.json");
  auto incomplete = Trainer::Create(options, &data);
  ASSERT_FALSE(incomplete.ok());
  EXPECT_EQ(RankExitCodeFor(incomplete.status()), kRankExitResumeCheckpointBad) << incomplete.status();

  options.resume_from.clear();
  options.init_from = checkpoint;
  auto from = Trainer::Create(options, &data);
  ASSERT_FALSE(from.ok());
  EXPECT_EQ(RankExitCodeFor(from.status()), kRankExitInputMissing) << from.status();
}

TEST(Trainer, RunStopsAtTheBudgetWritesCheckpointsAndKeepsTheNewest) {
  auto plan = TinyPlan(std::string(kStage).replace(std::string(kStage).find("100K"), 4, "6Ki"));
  plan.mutable_stages(0)->mutable_checkpoint()->set_every_steps(4);
  plan.mutable_stages(0)->mutable_checkpoint()->set_keep_last(2);
  const std::string dir = FreshDir("run");
  TokenStreamSource data(Bytes(RepetitiveText()));
  auto trainer = Trainer::Create(Options(plan, dir), &data);
  ASSERT_TRUE(trainer.ok());
  int steps = 0;
  std::vector<std::string> written;
  ASSERT_TRUE(
      (*trainer)
          ->Run([&](const StepReport&) { ++steps; },
                [&](const std::string& d, const absl::Status& saved) {
                  EXPECT_TRUE(saved.ok()) << saved;
                  written.push_back(d);
                })
          .ok());
  EXPECT_EQ(steps, 12);           // 6144 tokens / 512 per step
  ASSERT_EQ(written.size(), 3u);  // steps 4, 8, 12 (final)
  const auto kept = ListCheckpointDirs(dir);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(std::filesystem::path(kept[1]).filename(), "step-000012");
  auto manifest = ReadCheckpointManifest(kept[1]);
  ASSERT_TRUE(manifest.ok());
  EXPECT_TRUE(manifest->final());
  EXPECT_EQ(manifest->tokens(), 6144);
  EXPECT_EQ(manifest->stage(), "core");
}

// A save that fails (its first try, as on a disk full for a moment) costs that checkpoint only:
// training goes on, the callback hears the error, nothing is pruned for it. The final save is
// tried again and lands; its steps are those of an undisturbed run.
TEST(Trainer, AFailedSaveCostsThatCheckpointAndTheFinalOneIsTriedAgain) {
  auto plan = TinyPlan(std::string(kStage).replace(std::string(kStage).find("100K"), 4, "6Ki"));
  plan.mutable_stages(0)->mutable_checkpoint()->set_every_steps(4);
  plan.mutable_stages(0)->mutable_checkpoint()->set_keep_last(0);
  const std::string dir = FreshDir("failed_save");
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions options = Options(plan, dir);
  options.fail_saves_at_steps = {8, 12};
  auto trainer = Trainer::Create(options, &data);
  ASSERT_TRUE(trainer.ok());
  std::vector<std::pair<std::string, absl::Status>> saves;
  int steps = 0;
  const absl::Status run =
      (*trainer)->Run([&](const StepReport&) { ++steps; },
                      [&](const std::string& d, const absl::Status& saved) { saves.emplace_back(d, saved); });
  ASSERT_TRUE(run.ok()) << run;
  EXPECT_EQ(steps, 12);
  ASSERT_EQ(saves.size(), 3u);
  EXPECT_TRUE(saves[0].second.ok());
  EXPECT_EQ(saves[1].second.code(), absl::StatusCode::kResourceExhausted) << saves[1].second;
  EXPECT_NE(saves[1].second.message().find("No space left on device"), std::string::npos);
  EXPECT_TRUE(saves[2].second.ok()) << saves[2].second;  // the final save's second try
  const auto kept = ListCheckpointDirs(dir);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(std::filesystem::path(kept[0]).filename(), "step-000004");
  EXPECT_EQ(std::filesystem::path(kept[1]).filename(), "step-000012");
}

TEST(Trainer, GradientAccumulationDoesNotChangeTheStep) {
  // The same global batch in 1 or 4 micro-batches: the same loss and nearly the same weights.
  std::vector<std::vector<float>> weights;
  std::vector<double> losses;
  for (int micro : {8, 2}) {
    auto plan = TinyPlan(kStage);
    plan.mutable_stages(0)->mutable_parallel()->set_micro_batch_size(micro);
    TokenStreamSource data(Bytes(RepetitiveText()));
    auto trainer = Trainer::Create(Options(plan), &data);
    ASSERT_TRUE(trainer.ok());
    auto r = (*trainer)->Step();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->micro_batches, 8 / micro);
    losses.push_back(r->loss);
    Transformer& m = (*trainer)->model();
    weights.emplace_back(m.params(), m.params() + m.num_params());
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-5);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < weights[0].size(); ++i) {
    diff += (weights[0][i] - weights[1][i]) * (weights[0][i] - weights[1][i]);
    norm += weights[0][i] * weights[0][i];
  }
  EXPECT_LT(std::sqrt(diff / norm), 1e-5);
}

TEST(Trainer, BatchRampAndSequenceScheduleApplyAtTheirBoundaries) {
  const auto plan = TinyPlan(R"(    tokens: 8Ki
    optimizer: {lr: 1e-3}
    parallel: {micro_batch_size: 2}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 512}, {at_tokens: 1Ki, global_batch_tokens: 1Ki}, {at_tokens: 4Ki, global_batch_tokens: 2Ki}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 64}, {at_tokens: 2Ki, seq_len: 128}]
    data_mix: [{at_tokens: 0, weights: {text: 1}}]
)");
  TokenStreamSource data(Bytes(RepetitiveText()));
  auto trainer = Trainer::Create(Options(plan), &data);
  ASSERT_TRUE(trainer.ok());
  std::vector<std::tuple<int64_t, int64_t, int>> seen;  // (tokens before, batch, seq)
  int64_t before = 0;
  ASSERT_TRUE((*trainer)
                  ->Run(
                      [&](const StepReport& r) {
                        seen.emplace_back(before, r.global_batch_tokens, r.seq_len);
                        before = r.tokens;
                      },
                      nullptr)
                  .ok());
  const std::vector<std::tuple<int64_t, int64_t, int>> expected = {
      {0, 512, 64},      {512, 512, 64},    {1024, 1024, 64}, {2048, 1024, 128},
      {3072, 1024, 128}, {4096, 2048, 128}, {6144, 2048, 128}};
  EXPECT_EQ(seen, expected);
}

TEST(Trainer, ResumingFromACheckpointOfAnotherModelSaysWhy) {
  const auto plan = TinyPlan(kStage);
  const std::string dir = FreshDir("mismatch");
  {
    TokenStreamSource data(Bytes(RepetitiveText()));
    auto trainer = Trainer::Create(Options(plan, dir), &data);
    ASSERT_TRUE(trainer.ok());
    ASSERT_TRUE((*trainer)->Step().ok());
    ASSERT_TRUE((*trainer)->SaveCheckpoint(false).ok());
  }
  auto wider = TinyPlan(kStage);
  wider.mutable_model()->set_ffn_size(192);
  TokenStreamSource data(Bytes(RepetitiveText()));
  TrainerOptions options = Options(wider);
  options.init_from = dir + "/" + CheckpointDirName(1);
  auto trainer = Trainer::Create(options, &data);
  ASSERT_FALSE(trainer.ok());
  EXPECT_NE(trainer.status().message().find("does not fit this model"), std::string::npos)
      << trainer.status();
  EXPECT_NE(trainer.status().message().find("mlp.gate_proj.weight"), std::string::npos) << trainer.status();
}

}  // namespace
}  // namespace loom::engine

namespace loom::engine {
namespace {

// ZeRO-1's optimizer: shards that split the parameters anywhere (here mid-tensor, in 3 uneven
// pieces) update exactly what the whole-buffer optimizer updates, step after step, and a shard
// taken from a whole optimizer's state continues it.
TEST(OptimizerShard, ShardsStepExactlyAsTheWholeOptimizer) {
  loom::v1::ModelConfig m;
  m.set_layers(1);
  m.set_d_model(16);
  m.set_heads(2);
  m.set_kv_heads(1);
  m.set_ffn_size(32);
  m.set_vocab_size(40);
  Transformer model(*TransformerConfig::FromProto(m));
  model.InitWeights(3);
  const int64_t n = model.num_params();
  OptimizerSettings settings;
  settings.weight_decay = 0.1f;
  std::vector<float> whole_params(model.params(), model.params() + n), sharded = whole_params, grads(n);
  Optimizer whole(model.layout(), settings);
  const int64_t cuts[] = {0, n / 3 + 7, 2 * n / 3 + 1, n};
  std::vector<std::unique_ptr<Optimizer>> shards;
  for (int s = 0; s < 3; ++s) {
    shards.push_back(std::make_unique<Optimizer>(model.layout(), settings, OptimizerShard{cuts[s], cuts[s + 1]}));
    EXPECT_EQ(shards.back()->first_moment().size(), cuts[s + 1] - cuts[s]);
  }
  for (int step = 0; step < 3; ++step) {
    for (int64_t i = 0; i < n; ++i) grads[i] = std::sin(0.37 * i + step);
    const double norm = whole.Step(whole_params.data(), grads.data(), 1e-2f);
    for (auto& shard : shards) shard->StepShard(sharded.data(), grads.data(), 1e-2f, norm);
  }
  EXPECT_EQ(std::memcmp(whole_params.data(), sharded.data(), n * sizeof(float)), 0);
  Optimizer resumed(model.layout(), settings, OptimizerShard{cuts[1], cuts[2]});
  resumed.CopyShardFrom(whole);
  EXPECT_EQ(resumed.step(), 3);
  EXPECT_EQ(std::memcmp(resumed.second_moment().data(), whole.second_moment().data() + cuts[1],
                        (cuts[2] - cuts[1]) * sizeof(float)),
            0);
}

}  // namespace
}  // namespace loom::engine
