// The one training loop of every stage kind that trains, on one rank: each optimizer step takes
// the global batch and sequence length the stage's schedules give for the tokens consumed so far,
// splits this rank's share into micro-batches (gradient accumulation), runs each through the
// stage's objective (objective.h: language modelling, distillation, DPO, reward model, policy
// gradient), sums the gradients over the data-parallel ranks and applies the optimizer at the
// scheduled learning rate. How the model is laid out across ranks is the ParallelModel's business
// (parallel/parallel_model.h), not the loop's. Everything a resume needs — weights, optimizer
// moments, step, tokens, data position and RNG — goes into its checkpoints, so a resumed run
// repeats the uninterrupted one bit for bit.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/model/random.h"
#include "worker/engine/model/transformer.h"
#include "worker/engine/parallel/parallel_model.h"
#include "worker/engine/sources/batch_source.h"
#include "worker/engine/training/objective.h"

namespace loom::engine {

struct TrainerOptions {
  // The stage's model (a validated plan's) and the stage itself, resolved (plan_resolve.h).
  loom::v1::ModelConfig model;
  loom::v1::Stage stage;
  std::string plan_id;
  // Where checkpoints go: `<checkpoint_dir>/step-<N>`. Empty: no checkpoints.
  std::string checkpoint_dir;
  // Delete checkpoints beyond checkpoint.keep_last after each save (a local run). False on a
  // cluster's ranks: there the coordinator, which knows what is committed and what later stages
  // need, deletes.
  bool prune_checkpoints = true;
  // Steps whose save fails its first try as on a full disk (fault injection for tests).
  std::set<int64_t> fail_saves_at_steps;
  // Sleeps this long inside every step's compute (a slow rank, for straggler tests:
  // LOOM_TEST_SLOW_RANK on a rank); zero in real runs.
  absl::Duration extra_compute = absl::ZeroDuration();
  // A checkpoint to resume from (weights, optimizer, step, tokens, data, RNG), or empty.
  std::string resume_from;
  // A checkpoint to start from (weights only: the stage's `from`), or empty for random init.
  // Its RoPE settings carry over unless the stage sets its own.
  std::string init_from;
  // Stop after this many steps in total (0: run to the stage's token budget).
  int64_t max_steps = 0;
  // The stage length the LR schedule plans with when the stage has no token budget (an SFT stage
  // that ends after its dataset's epochs); 0: the stage's `tokens`.
  int64_t schedule_tokens = 0;
  // The rank's data-, tensor- and pipeline-parallel groups (not owned; none: this process alone).
  // Each data-parallel rank takes its slice of every global batch; tensor and pipeline ranks
  // share their data-parallel rank's batches and hold a part of the model (parallel_model.h).
  ParallelGroups parallel;
  // Data parallelism without ZeRO-1 or model parallelism: the gradients of the step's last
  // micro-batch are all-reduced in buckets of this many floats while its backward pass goes on;
  // 0: one all-reduce after the backward.
  int64_t bucket_floats = int64_t{1} << 20;
  // What the steps optimise; null: language modelling (objective.h).
  std::shared_ptr<Objective> objective;
  // What the model reads, recorded in every checkpoint's manifest so that an export can ship it
  // (`loom export-hf`): the tokenizer file and its sha256, and the chat template ("chatml",
  // "alpaca"; "" for a stage of plain text, whose checkpoints keep the template of the checkpoint
  // it started from, if any).
  std::string tokenizer_path;
  std::string tokenizer_sha256;
  std::string chat_template;
};

struct StepReport {
  int64_t step = 0;    // steps done, this one included
  int64_t tokens = 0;  // tokens consumed after this step
  double loss = 0;     // mean over the step's target tokens (pairs, rows: the objective's Normalizer)
  double learning_rate = 0;
  double grad_norm = 0;
  int64_t global_batch_tokens = 0;
  int seq_len = 0;
  int micro_batches = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  // Of `seconds`, the time spent waiting for the gradients' data-parallel communication (what the
  // backward pass did not hide); 0 without data parallelism.
  double communication_wait_seconds = 0;
  // `seconds` split three ways, for per-rank timings and straggler detection:
  // waiting for the batch from the data source; waiting in the step's collectives (the gradient
  // reduction whole, the loss and measure all-reduces: where a rank waits for a slower peer);
  // and the rest, this rank's own compute (forward, backward, optimizer; under pipeline
  // parallelism the stage's sends and receives count here).
  double data_wait_seconds = 0;
  double collective_seconds = 0;
  double compute_seconds = 0;
  // Measures beyond the loss: the objective's ("dpo/accuracy", ...) and the batch source's
  // ("rl/reward", ...), means over the step's examples and the data-parallel ranks.
  std::map<std::string, double> metrics;
};

class Trainer {
 public:
  // Builds the model, loads `resume_from` or `init_from`, or initialises from the stage seed.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerOptions options, BatchSource* data);

  // One optimizer step.
  absl::StatusOr<StepReport> Step();
  // The token budget (or max_steps) is reached, or the data is exhausted.
  bool Done() const;

  // Writes `<checkpoint_dir>/step-<N>` and returns its path; `final` marks the stage's last.
  // One rank writes (parallel_model.h); every rank returns once the copy is durable.
  absl::StatusOr<std::string> SaveCheckpoint(bool final);

  // Steps until Done, checkpointing every checkpoint.every_steps and at the end (keeping the
  // newest checkpoint.keep_last when prune_checkpoints); calls on_step after every step and
  // on_checkpoint(dir, written) after every save, on every rank once the writer is done:
  // `written` is the writer's outcome on the writer, OK elsewhere. A failed save does not stop
  // training (the next interval tries again) unless it is the final one, which the writer tries
  // kFinalSaveTries times, or this attempt lost its write lease (it was replaced). Asked to
  // checkpoint and stop (RequestCheckpointAndStop on any rank), every rank saves at the same step
  // boundary and Run returns Preempted(step).
  absl::Status Run(const std::function<void(const StepReport&)>& on_step,
                   const std::function<void(const std::string& dir, const absl::Status& written)>& on_checkpoint);
  static constexpr int kFinalSaveTries = 4;

  // This rank's model: under tensor parallelism its shard, under pipeline parallelism its stage.
  Transformer& model() { return parallel_->model(); }
  // The whole model's weights in the layout of ParameterLayout(whole config): under tensor or
  // pipeline parallelism gathered from the group (a collective every rank of it must call).
  absl::StatusOr<std::vector<float>> WholeWeights() { return parallel_->WholeWeights(); }
  int64_t step() const { return parallel_->optimizer_step(); }
  int64_t tokens() const { return tokens_; }
  // The model config as trained (the stage's RoPE applied), as written into checkpoints.
  const loom::v1::ModelConfig& effective_model() const { return effective_model_; }

 private:
  Trainer(TrainerOptions options, BatchSource* data) : options_(std::move(options)), data_(data), rng_(0) {}
  absl::Status Init();
  // The data source's measures of this step's batch, averaged over the data-parallel ranks.
  absl::Status AddBatchMetrics(StepReport* report);
  void PruneCheckpoints();
  // Whether any rank of the layout was asked to checkpoint and stop (a drain: SIGUSR1); a
  // collective every rank joins after each step.
  absl::StatusOr<bool> AgreeOnCheckpointAndStop();
  // SaveCheckpoint with the writer's outcome apart: an error only when the group is broken.
  absl::StatusOr<std::string> Save(bool final, absl::Status* written);
  Communicator* data_parallel() const { return options_.parallel.data; }

  TrainerOptions options_;
  BatchSource* data_;
  loom::v1::ModelConfig effective_model_;
  std::unique_ptr<ParallelModel> parallel_;
  Random rng_;
  int64_t tokens_ = 0;
  data::TokenBatch batch_;
};

}  // namespace loom::engine
