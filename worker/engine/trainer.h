// The training loop of one pretraining-style stage on one process: each optimizer step takes
// the global batch and sequence length the stage's schedules give for the tokens consumed so far,
// splits this rank's share into micro-batches (gradient accumulation), and applies the optimizer
// at the scheduled learning rate. Everything a resume needs — weights, optimizer moments, step,
// tokens, data position and RNG — goes into its checkpoints, so a resumed run repeats the
// uninterrupted one bit for bit.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cpu/distill.h"
#include "kernels/cpu/preference.h"
#include "loom/v1/plan.pb.h"
#include "worker/engine/batch_source.h"
#include "worker/engine/communicator.h"
#include "worker/engine/optimizer.h"
#include "worker/engine/overlapped_all_reduce.h"
#include "worker/engine/random.h"
#include "worker/engine/transformer.h"

namespace loom::engine {

struct TrainerOptions {
  // The stage's model (a validated plan's) and the stage itself, resolved (plan_resolve.h).
  loom::v1::ModelConfig model;
  loom::v1::Stage stage;
  std::string plan_id;
  // Where checkpoints go: `<checkpoint_dir>/step-<N>`. Empty: no checkpoints.
  std::string checkpoint_dir;
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
  // The data-parallel group (not owned); null: this process alone. Each rank takes its slice of
  // every global batch, gradients are summed across the group before the optimizer, and only
  // rank 0 writes checkpoints (every rank holds the same weights).
  Communicator* data_parallel = nullptr;
  // Data parallelism without ZeRO-1 or model parallelism: the gradients of the step's last
  // micro-batch are all-reduced in buckets of this many floats while its backward pass goes on
  // (overlapped_all_reduce.h); 0: one all-reduce after the backward.
  int64_t bucket_floats = int64_t{1} << 20;
  // The tensor-parallel group (not owned; tensor_parallel.h); null or size 1: none. Its ranks
  // share one data-parallel rank's batches and each holds a shard of the model; checkpoints hold
  // the whole model (gathered at save, sliced at load). Pretraining-style and SFT losses only.
  Communicator* tensor_parallel = nullptr;
  // The pipeline-parallel group (not owned; pipeline_parallel.h; rank = stage); null or size 1:
  // none. Its ranks share one data-parallel rank's batches, each runs its stage's layers under the
  // 1F1B schedule; checkpoints hold the whole model. With tensor parallelism too, each stage is
  // split across its tensor group (rank = (dp_rank · pp + pp_rank) · tp + tp_rank).
  Communicator* pipeline_parallel = nullptr;
  // Distillation (a `distill` stage): the teacher's checkpoint, run forward beside the student
  // on every micro-batch; the loss is then the distillation loss of kernels/cpu/distill.h.
  std::string teacher_from;
  kernels::cpu::DistillOptions distill;
  // Preference optimisation (a `dpo` stage): batches come in (chosen, rejected) row pairs with
  // the reference's log-probabilities (PreferenceBatchSource); the loss is the mean over pairs of
  // kernels/cpu/preference.h's DPO loss.
  bool preference = false;
  kernels::cpu::DpoOptions dpo;
  // Policy gradient (an `rl` stage): every row carries its sample's advantage (RlBatchSource);
  // the loss is the mean over rows of −advantage · (the row's summed log-probability).
  bool policy_gradient = false;
  // Reward model (a `reward_model` stage): (chosen, rejected) row pairs, the reward of a row the
  // logit of `reward_token` at its last target position (preference_source.h RowRewards); the loss
  // is the Bradley–Terry loss −log σ(r_chosen − r_rejected − reward_margin), mean over pairs.
  bool reward_model = false;
  int32_t reward_token = -1;
  double reward_margin = 0;
};

struct StepReport {
  int64_t step = 0;    // steps done, this one included
  int64_t tokens = 0;  // tokens consumed after this step
  double loss = 0;     // mean over the step's target tokens
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
  // Measures beyond the loss (dpo: "dpo/accuracy", "dpo/margin", "dpo/chosen_reward",
  // "dpo/rejected_reward", means over the step's pairs).
  std::map<std::string, double> metrics;
};

// The kernel options a stage's `distill` block asks for (defaults from plan.proto).
kernels::cpu::DistillOptions DistillOptionsFromProto(const loom::v1::DistillConfig& config);
// The kernel options a stage's `dpo` block asks for.
kernels::cpu::DpoOptions DpoOptionsFromProto(const loom::v1::DpoConfig& config);

class Trainer {
 public:
  // Builds the model, loads `resume_from` or `init_from`, or initialises from the stage seed.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerOptions options, BatchSource* data);

  // One optimizer step.
  absl::StatusOr<StepReport> Step();
  // The token budget (or max_steps) is reached.
  bool Done() const;

  // Writes `<checkpoint_dir>/step-<N>` and returns its path; `final` marks the stage's last.
  // On a data-parallel rank other than 0 it writes nothing; every rank returns once rank 0's
  // copy is durable (a barrier).
  absl::StatusOr<std::string> SaveCheckpoint(bool final);

  // Steps until Done, checkpointing every checkpoint.every_steps and at the end (keeping the
  // newest checkpoint.keep_last); calls on_step after every step and on_checkpoint after every
  // checkpoint (on every rank, once the checkpoint is durable).
  absl::Status Run(const std::function<void(const StepReport&)>& on_step,
                   const std::function<void(const std::string&)>& on_checkpoint);

  // This rank's model: under tensor parallelism its shard, under pipeline parallelism its stage.
  Transformer& model() { return *model_; }
  // The whole model's weights in the layout of ParameterLayout(whole config): under tensor or
  // pipeline parallelism gathered from the group (a collective every rank of it must call).
  absl::StatusOr<std::vector<float>> WholeWeights();
  int64_t step() const { return optimizer_->step(); }
  int64_t tokens() const { return tokens_; }
  // The model config as trained (the stage's RoPE applied), as written into checkpoints.
  const loom::v1::ModelConfig& effective_model() const { return effective_model_; }

 private:
  Trainer(TrainerOptions options, BatchSource* data) : options_(std::move(options)), data_(data), rng_(0) {}
  absl::Status Init();
  // Applies the optimizer at the scheduled LR and counts the step's tokens; the report has all but
  // the loss and metrics.
  absl::StatusOr<StepReport> ApplyOptimizer(int64_t batch_tokens, int seq_len, int micro_batches,
                                            std::chrono::steady_clock::time_point start);
  // Sums the gradients over the data-parallel ranks: an all-reduce, or with ZeRO-1 a
  // reduce-scatter that leaves each rank the sums of the parameters whose state it owns.
  absl::Status ReduceGradients();
  // ZeRO-1 (stage parallel.zero1 with dp > 1): each rank owns the optimizer state of one
  // contiguous chunk of ceil(params / dp) parameters; after its update the chunks are all-gathered.
  bool zero1() const { return dp_size() > 1 && options_.stage.parallel().zero1(); }
  int64_t ShardChunk() const { return (model_->num_params() + dp_size() - 1) / dp_size(); }
  // ZeRO-1: every rank's `shard` (its chunk of a parameter-sized buffer) gathered into `whole`.
  absl::Status GatherShards(const float* shard, float* whole);
  // The whole optimizer state (ZeRO-1 or tensor parallel: gathered from every rank; a collective),
  // for checkpoints; null when this rank's optimizer is the whole one.
  absl::StatusOr<std::unique_ptr<Optimizer>> WholeOptimizer();
  // Loads or initialises the weights (and on resume the optimizer state), keeping this rank's
  // shard of them under ZeRO-1 or tensor parallelism.
  absl::Status LoadOrInitState(const OptimizerSettings& settings);
  // Fails for what tensor and pipeline parallelism do not cover yet.
  absl::Status CheckModelParallelSupport() const;
  // Under tensor or pipeline parallelism: every rank's `local` buffer (laid out like its
  // parameters) gathered into `whole` (laid out like the whole model's). A collective.
  absl::Status GatherWhole(const float* local, float* whole);
  // The data source's measures of this step's batch, averaged over the data-parallel ranks.
  absl::Status AddBatchMetrics(StepReport* report);
  // One micro-batch of (chosen, rejected) row pairs: forward, DPO loss, backward. Adds to
  // sums[0..4]: loss, ranked-right pairs, βΔ, β(chosen − reference), β(rejected − reference).
  absl::Status PreferenceMicroBatch(const data::TokenBatch& mb, double grad_scale, double* sums);
  // One micro-batch of reward-model row pairs: adds to sums[0..2]: loss, ranked-right pairs, margin.
  absl::Status RewardMicroBatch(const data::TokenBatch& mb, double grad_scale, double* sums);
  // One micro-batch of rl rows: adds Σ −advantage · log p(row) to *loss_sum.
  absl::Status PolicyGradientMicroBatch(const data::TokenBatch& mb, double grad_scale, double* loss_sum);
  // Backward of Σ_rows row_grad[r] · (summed log-probability of row r).
  void BackwardFromRowGrads(const data::TokenBatch& mb, float* logits, const std::vector<double>& row_grad);
  void PruneCheckpoints();
  int dp_rank() const { return options_.data_parallel ? options_.data_parallel->rank() : 0; }
  int dp_size() const { return options_.data_parallel ? options_.data_parallel->size() : 1; }
  int tp_rank() const { return tp_size() > 1 ? options_.tensor_parallel->rank() : 0; }
  int tp_size() const { return options_.tensor_parallel ? options_.tensor_parallel->size() : 1; }
  int pp_rank() const { return pp_size() > 1 ? options_.pipeline_parallel->rank() : 0; }
  int pp_size() const { return options_.pipeline_parallel ? options_.pipeline_parallel->size() : 1; }
  // This rank holds a part of the model (tensor or pipeline parallel).
  bool model_parallel() const { return tp_size() > 1 || pp_size() > 1; }
  // The rank that writes checkpoints: the first of its data-, tensor- and pipeline-parallel groups.
  bool writer() const { return dp_rank() == 0 && tp_rank() == 0 && pp_rank() == 0; }

  TrainerOptions options_;
  BatchSource* data_;
  loom::v1::ModelConfig effective_model_;
  std::unique_ptr<Transformer> model_;
  TransformerConfig whole_config_;                 // the model's architecture, unsharded
  TransformerConfig stage_config_;                 // this pipeline stage's, before the tensor split
  std::unique_ptr<ParameterLayout> whole_layout_;  // its layout (tensor or pipeline parallel only)
  std::unique_ptr<Transformer> teacher_;  // distillation only
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<float> zero1_padded_, zero1_chunk_;  // ZeRO-1's [dp * chunk] and [chunk] buffers
  std::unique_ptr<OverlappedAllReduce> overlap_;   // bucketed all-reduce beside the backward
  Random rng_;
  int64_t tokens_ = 0;
  data::TokenBatch batch_;
};

}  // namespace loom::engine
