#include "worker/engine/trainer.h"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_io.h"
#include "common/plan_resolve.h"
#include "common/status_macros.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/log_probs.h"
#include "kernels/cpu/optimizer.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/pipeline_parallel.h"
#include "worker/engine/preference_source.h"
#include "worker/engine/schedules.h"
#include "worker/engine/tensor_parallel.h"

namespace loom::engine {

static_assert(kernels::cpu::kIgnoreTarget == data::kIgnoreIndex, "one ignore index across the engine");

kernels::cpu::DistillOptions DistillOptionsFromProto(const loom::v1::DistillConfig& config) {
  kernels::cpu::DistillOptions o;
  o.mode = config.mode() == loom::v1::DistillConfig::MODE_TOP1_TARGET
               ? kernels::cpu::DistillOptions::Mode::kTop1Target
               : kernels::cpu::DistillOptions::Mode::kSoftCrossEntropy;
  o.temperature = config.has_temperature() ? static_cast<float>(config.temperature()) : 1.0f;
  o.top_k = config.has_top_k() ? config.top_k() : 0;
  o.teacher_weight = config.has_teacher_weight() ? static_cast<float>(config.teacher_weight()) : 0.9f;
  o.lm_weight = config.has_lm_loss_weight() ? static_cast<float>(config.lm_loss_weight()) : 0.0f;
  return o;
}

kernels::cpu::DpoOptions DpoOptionsFromProto(const loom::v1::DpoConfig& config) {
  kernels::cpu::DpoOptions o;
  o.loss = config.loss() == loom::v1::DpoConfig::LOSS_IPO     ? kernels::cpu::DpoLoss::kIpo
           : config.loss() == loom::v1::DpoConfig::LOSS_HINGE ? kernels::cpu::DpoLoss::kHinge
                                                              : kernels::cpu::DpoLoss::kSigmoid;
  o.beta = config.has_beta() ? config.beta() : 0.1;
  o.label_smoothing = config.has_label_smoothing() ? config.label_smoothing() : 0.0;
  return o;
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainerOptions options, BatchSource* data) {
  std::unique_ptr<Trainer> trainer(new Trainer(std::move(options), data));
  if (absl::Status s = trainer->Init(); !s.ok()) return s;
  return trainer;
}

absl::Status Trainer::Init() {
  const loom::v1::Stage& stage = options_.stage;
  effective_model_ = options_.model;
  ApplyModelDefaults(&effective_model_);  // checkpoints record concrete values
  // A stage that starts from (or resumes) a checkpoint keeps that checkpoint's RoPE unless it
  // sets its own: an SFT stage after a context extension must not fall back to the old base.
  const std::string& source = !options_.resume_from.empty() ? options_.resume_from : options_.init_from;
  if (!source.empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> manifest = ReadCheckpointManifest(source, /*verify=*/false);
    if (!manifest.ok()) return manifest.status();
    if (manifest->model().has_rope_theta()) effective_model_.set_rope_theta(manifest->model().rope_theta());
    if (manifest->model().has_rope_scaling()) {
      *effective_model_.mutable_rope_scaling() = manifest->model().rope_scaling();
    }
  }
  if (stage.has_rope()) {
    if (stage.rope().has_theta()) effective_model_.set_rope_theta(stage.rope().theta());
    if (stage.rope().has_scaling()) *effective_model_.mutable_rope_scaling() = stage.rope().scaling();
  }
  absl::StatusOr<TransformerConfig> config = TransformerConfig::FromProto(effective_model_);
  if (!config.ok()) return config.status();
  whole_config_ = *config;
  if (model_parallel()) {
    LOOM_RETURN_IF_ERROR(CheckModelParallelSupport());
    whole_layout_ = std::make_unique<ParameterLayout>(whole_config_);
    // A pipeline stage's layers (all of them without pipeline parallelism), split across the
    // tensor group (not at all without tensor parallelism).
    LOOM_ASSIGN_OR_RETURN(stage_config_, PipelineStageConfig(whole_config_, pp_size(), pp_rank()));
    LOOM_ASSIGN_OR_RETURN(TransformerConfig shard, TensorParallelConfig(stage_config_, tp_size()));
    model_ = std::make_unique<Transformer>(shard, options_.tensor_parallel);
  } else {
    model_ = std::make_unique<Transformer>(whole_config_);
  }
  const OptimizerSettings settings = OptimizerSettings::FromProto(stage.optimizer());
  OptimizerShard shard;
  if (zero1()) {
    shard.begin = std::min<int64_t>(dp_rank() * ShardChunk(), model_->num_params());
    shard.end = std::min<int64_t>(shard.begin + ShardChunk(), model_->num_params());
  }
  optimizer_ = std::make_unique<Optimizer>(model_->layout(), settings, shard);
  rng_ = Random(stage.seed());
  LOOM_RETURN_IF_ERROR(LoadOrInitState(settings));
  if (dp_size() > 1 && !zero1() && !model_parallel() && options_.bucket_floats > 0) {
    overlap_ = std::make_unique<OverlappedAllReduce>(options_.data_parallel, options_.bucket_floats);
  }
  if (!options_.teacher_from.empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> manifest =
        ReadCheckpointManifest(options_.teacher_from, false);
    if (!manifest.ok()) return manifest.status();
    if (manifest->model().vocab_size() != effective_model_.vocab_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "distill.teacher ", options_.teacher_from, " has vocab_size ", manifest->model().vocab_size(),
          ", the student ", effective_model_.vocab_size(), ": they must share a tokenizer"));
    }
    absl::StatusOr<TransformerConfig> teacher_config = TransformerConfig::FromProto(manifest->model());
    if (!teacher_config.ok()) return teacher_config.status();
    teacher_ = std::make_unique<Transformer>(*teacher_config);
    if (auto loaded = LoadWeights(options_.teacher_from, teacher_.get()); !loaded.ok())
      return loaded.status();
  }
  return absl::OkStatus();
}

absl::Status Trainer::CheckModelParallelSupport() const {
  const std::string layout = absl::StrCat("parallel.tp ", tp_size(), ", parallel.pp ", pp_size());
  std::string what;
  if (options_.preference) what = "a dpo stage (its loss reads whole-vocabulary log-probabilities)";
  if (options_.reward_model) what = "a reward_model stage (its loss reads whole-vocabulary logits)";
  if (options_.policy_gradient) what = "an rl stage (its loss reads whole-vocabulary log-probabilities)";
  if (!options_.teacher_from.empty()) what = "a distill stage (the teacher runs whole beside the student)";
  if (zero1()) what = "parallel.zero1 (the optimizer shards the whole buffer)";
  if (what.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat("stage '", options_.stage.name(), "': ", what, " does not run with ",
                                               layout, " yet; use tp: 1 and pp: 1 for it"));
}

absl::Status Trainer::GatherWhole(const float* local, float* whole) {
  if (pp_size() == 1) return GatherTensors(*options_.tensor_parallel, *whole_layout_, model_->layout(), local, whole);
  std::vector<float> stage;
  if (tp_size() > 1) {  // this stage's tensors from the tensor group, then the stages
    const ParameterLayout stage_layout(stage_config_);
    stage.assign(stage_layout.total(), 0.0f);
    LOOM_RETURN_IF_ERROR(
        GatherTensors(*options_.tensor_parallel, stage_layout, model_->layout(), local, stage.data()));
    local = stage.data();
  }
  return GatherStages(*options_.pipeline_parallel, whole_config_, local, whole);
}

absl::Status Trainer::LoadOrInitState(const OptimizerSettings& settings) {
  // Checkpoints hold the whole model and optimizer state whatever the layout: under tensor
  // parallelism they load into a whole model first and each rank keeps its shard.
  std::unique_ptr<Transformer> whole_model;
  if (model_parallel()) whole_model = std::make_unique<Transformer>(whole_config_);
  Transformer* target = whole_model ? whole_model.get() : model_.get();
  if (!options_.resume_from.empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> manifest = LoadWeights(options_.resume_from, target);
    if (!manifest.ok()) return manifest.status();
    const bool sharded = zero1() || whole_model;
    Optimizer whole(target->layout(), settings);
    LOOM_RETURN_IF_ERROR(LoadOptimizerState(options_.resume_from, *manifest, sharded ? &whole : optimizer_.get()));
    if (zero1()) optimizer_->CopyShardFrom(whole);
    if (whole_model) {
      ShardTensors(whole.layout(), whole.first_moment().data(), model_->layout(), tp_rank(), tp_size(),
                   optimizer_->first_moment().data());
      if (whole.has_second_moment()) {
        ShardTensors(whole.layout(), whole.second_moment().data(), model_->layout(), tp_rank(), tp_size(),
                     optimizer_->second_moment().data());
      }
      optimizer_->set_step(whole.step());
    }
    LOOM_RETURN_IF_ERROR(data_->RestoreState(manifest->data_state()));
    if (!rng_.RestoreState(manifest->rng_state())) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", options_.resume_from, " has a malformed RNG state"));
    }
    tokens_ = manifest->tokens();
  } else if (!options_.init_from.empty()) {
    if (auto manifest = LoadWeights(options_.init_from, target); !manifest.ok()) return manifest.status();
  } else {
    target->InitWeights(rng_.NextU64());
  }
  if (whole_model) {
    ShardTensors(whole_model->layout(), whole_model->params(), model_->layout(), tp_rank(), tp_size(),
                 model_->params());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> Trainer::WholeWeights() {
  if (!model_parallel()) return std::vector<float>(model_->params(), model_->params() + model_->num_params());
  std::vector<float> whole(whole_layout_->total(), 0.0f);
  LOOM_RETURN_IF_ERROR(GatherWhole(model_->params(), whole.data()));
  return whole;
}

bool Trainer::Done() const {
  if (options_.max_steps > 0 && step() >= options_.max_steps) return true;
  if (data_->Exhausted()) return true;
  return options_.stage.tokens() > 0 && tokens_ >= options_.stage.tokens();
}

absl::StatusOr<StepReport> Trainer::Step() {
  const auto start = std::chrono::steady_clock::now();
  const loom::v1::Stage& stage = options_.stage;
  const int64_t batch_tokens = GlobalBatchTokens(stage, tokens_);
  const int seq_len = SeqLen(stage, tokens_);
  const int micro = stage.parallel().micro_batch_size();
  const int dp = dp_size(), rank = dp_rank();
  if (seq_len < 2 || batch_tokens % (int64_t{seq_len} * micro * dp) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "global batch ", batch_tokens, " tokens is not a multiple of seq_len ", seq_len,
        " x micro_batch_size ", micro, " x dp ", dp, " at ", tokens_, " tokens (validate the plan)"));
  }
  const int global_sequences = static_cast<int>(batch_tokens / seq_len);
  if (absl::Status s = data_->Next(seq_len, global_sequences, rank, dp, &batch_); !s.ok()) return s;

  // The loss is the mean over the global batch's target tokens, whichever rank holds them.
  double targets = 0;
  for (int32_t t : batch_.targets) targets += t != data::kIgnoreIndex;
  if (options_.data_parallel) {
    if (absl::Status s = options_.data_parallel->AllReduceSum(&targets, 1); !s.ok()) return s;
  }
  if (targets == 0) return absl::FailedPreconditionError("a training batch has no target tokens");
  const float grad_scale = static_cast<float>(1.0 / targets);
  if (options_.preference) {
    if (micro % 2 != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a dpo stage needs an even parallel.micro_batch_size (a pair's two rows share a micro-batch); it is ",
          micro));
    }
    const double global_pairs = global_sequences / 2.0;
    model_->ZeroGrads();
    double sums[5] = {0, 0, 0, 0, 0};
    for (int m = 0; m < batch_.batch_size / micro; ++m) {
      LOOM_RETURN_IF_ERROR(PreferenceMicroBatch(SliceBatch(batch_, m * micro, micro), 1.0 / global_pairs, sums));
    }
    if (options_.data_parallel) {
      LOOM_RETURN_IF_ERROR(ReduceGradients());
      LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(sums, 5));
    }
    LOOM_ASSIGN_OR_RETURN(StepReport r, ApplyOptimizer(batch_tokens, seq_len, batch_.batch_size / micro, start));
    LOOM_RETURN_IF_ERROR(AddBatchMetrics(&r));
    r.loss = sums[0] / global_pairs;
    r.metrics["dpo/accuracy"] = sums[1] / global_pairs;
    r.metrics["dpo/margin"] = sums[2] / global_pairs;
    r.metrics["dpo/chosen_reward"] = sums[3] / global_pairs;
    r.metrics["dpo/rejected_reward"] = sums[4] / global_pairs;
    return r;
  }

  if (options_.reward_model) {
    if (micro % 2 != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a reward_model stage needs an even parallel.micro_batch_size (a pair's two rows share a "
          "micro-batch); it is ",
          micro));
    }
    const double global_pairs = global_sequences / 2.0;
    model_->ZeroGrads();
    double sums[3] = {0, 0, 0};
    for (int m = 0; m < batch_.batch_size / micro; ++m) {
      LOOM_RETURN_IF_ERROR(RewardMicroBatch(SliceBatch(batch_, m * micro, micro), 1.0 / global_pairs, sums));
    }
    if (options_.data_parallel) {
      LOOM_RETURN_IF_ERROR(ReduceGradients());
      LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(sums, 3));
    }
    LOOM_ASSIGN_OR_RETURN(StepReport r, ApplyOptimizer(batch_tokens, seq_len, batch_.batch_size / micro, start));
    r.loss = sums[0] / global_pairs;
    r.metrics["rm/accuracy"] = sums[1] / global_pairs;
    r.metrics["rm/margin"] = sums[2] / global_pairs;
    return r;
  }
  if (options_.policy_gradient) {
    model_->ZeroGrads();
    double loss_sum = 0;
    for (int m = 0; m < batch_.batch_size / micro; ++m) {
      LOOM_RETURN_IF_ERROR(
          PolicyGradientMicroBatch(SliceBatch(batch_, m * micro, micro), 1.0 / global_sequences, &loss_sum));
    }
    if (options_.data_parallel) {
      LOOM_RETURN_IF_ERROR(ReduceGradients());
      LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(&loss_sum, 1));
    }
    LOOM_ASSIGN_OR_RETURN(StepReport r, ApplyOptimizer(batch_tokens, seq_len, batch_.batch_size / micro, start));
    LOOM_RETURN_IF_ERROR(AddBatchMetrics(&r));
    r.loss = loss_sum / global_sequences;
    return r;
  }

  model_->ZeroGrads();
  double loss_sum = 0;
  const int vocab = model_->config().vocab;
  const int micro_batches = batch_.batch_size / micro;
  // Cross-entropy over a micro-batch's logits (this rank's vocabulary columns under tensor
  // parallelism), d(loss)/d(logits) written over them.
  auto cross_entropy = [&](const data::TokenBatch& mb, float* logits) -> absl::StatusOr<double> {
    if (tp_size() > 1) {
      return VocabParallelCrossEntropy(*options_.tensor_parallel, logits, mb.targets.data(), mb.tokens(), vocab,
                                       model_->vocab_begin(), grad_scale, logits);
    }
    return kernels::cpu::CrossEntropy(logits, mb.targets.data(), mb.tokens(), vocab, grad_scale, logits).loss_sum;
  };
  if (pp_size() > 1) {
    std::vector<data::TokenBatch> mbs;
    for (int m = 0; m < micro_batches; ++m) mbs.push_back(SliceBatch(batch_, m * micro, micro));
    LOOM_ASSIGN_OR_RETURN(loss_sum, RunOneForwardOneBackward(*options_.pipeline_parallel, *model_, mbs, cross_entropy));
    // The last stage has the loss; every stage reports it.
    LOOM_RETURN_IF_ERROR(options_.pipeline_parallel->AllReduceSum(&loss_sum, 1));
  } else {
    for (int m = 0; m < micro_batches; ++m) {
      const data::TokenBatch mb = SliceBatch(batch_, m * micro, micro);
      // The last micro-batch's backward completes each layer's gradients: send them as it goes.
      if (overlap_ && m + 1 == micro_batches) {
        overlap_->Start(model_->grads());
        model_->set_on_grads_ready([this](int64_t begin, int64_t end) { overlap_->Ready(begin, end); });
      }
      if (teacher_) {
        // The teacher's logits live in its own activation buffer until its next Forward.
        const float* teacher_logits = teacher_->Forward(mb);
        float* logits = model_->Forward(mb);
        loss_sum += kernels::cpu::DistillCrossEntropy(logits, teacher_logits, mb.targets.data(), mb.tokens(),
                                                      vocab, options_.distill, grad_scale, logits)
                        .loss_sum;
        model_->Backward(logits);
        continue;
      }
      LOOM_ASSIGN_OR_RETURN(float* logits, model_->RunForward(mb));
      LOOM_ASSIGN_OR_RETURN(double rows_loss, cross_entropy(mb, logits));
      loss_sum += rows_loss;
      LOOM_RETURN_IF_ERROR(model_->RunBackward(logits));
    }
  }
  double communication_wait = 0;
  if (overlap_) {
    model_->set_on_grads_ready(nullptr);
    LOOM_RETURN_IF_ERROR(overlap_->Finish());
    communication_wait = overlap_->exposed_seconds();
  } else if (options_.data_parallel) {
    const auto reduce_start = std::chrono::steady_clock::now();
    LOOM_RETURN_IF_ERROR(ReduceGradients());
    communication_wait = std::chrono::duration<double>(std::chrono::steady_clock::now() - reduce_start).count();
  }
  if (options_.data_parallel) LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(&loss_sum, 1));
  LOOM_ASSIGN_OR_RETURN(StepReport r, ApplyOptimizer(batch_tokens, seq_len, micro_batches, start));
  r.communication_wait_seconds = communication_wait;
  r.loss = loss_sum / targets;
  return r;
}

absl::Status Trainer::AddBatchMetrics(StepReport* r) {
  for (const auto& [name, value] : data_->BatchMetrics()) {
    double v = value;
    if (options_.data_parallel) {
      LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(&v, 1));
      v /= dp_size();
    }
    r->metrics[name] = v;
  }
  return absl::OkStatus();
}

absl::Status Trainer::ReduceGradients() {
  if (!options_.data_parallel) return absl::OkStatus();
  const int64_t n = model_->num_params();
  if (!zero1()) return options_.data_parallel->AllReduceSum(model_->grads(), n);
  const int64_t chunk = ShardChunk();
  zero1_padded_.assign(static_cast<size_t>(chunk) * dp_size(), 0.0f);
  std::copy(model_->grads(), model_->grads() + n, zero1_padded_.begin());
  zero1_chunk_.resize(chunk);
  LOOM_RETURN_IF_ERROR(options_.data_parallel->ReduceScatterSum(zero1_padded_.data(), chunk, zero1_chunk_.data()));
  // Only this rank's chunk of model_->grads() holds sums from here on; the rest is stale.
  std::copy(zero1_chunk_.begin(), zero1_chunk_.begin() + (optimizer_->shard_end() - optimizer_->shard_begin()),
            model_->grads() + optimizer_->shard_begin());
  return absl::OkStatus();
}

absl::StatusOr<StepReport> Trainer::ApplyOptimizer(int64_t batch_tokens, int seq_len, int micro_batches,
                                                   std::chrono::steady_clock::time_point start) {
  const loom::v1::Stage& stage = options_.stage;
  const int64_t total = stage.tokens() > 0 ? stage.tokens() : options_.schedule_tokens;
  const double lr = LearningRate(stage.lr_schedule(), stage.optimizer().lr(), tokens_, total);
  double norm = 0;
  if (zero1()) {
    // The global norm from every rank's chunk, then each rank updates its chunk and the updated
    // chunks are gathered into every rank's weights.
    const int64_t begin = optimizer_->shard_begin(), owned = optimizer_->shard_end() - begin;
    double squares = kernels::cpu::SumSquares(model_->grads() + begin, owned);
    LOOM_RETURN_IF_ERROR(options_.data_parallel->AllReduceSum(&squares, 1));
    norm = std::sqrt(squares);
    optimizer_->StepShard(model_->params(), model_->grads(), static_cast<float>(lr), norm);
    LOOM_RETURN_IF_ERROR(GatherShards(model_->params() + begin, model_->params()));
  } else if (pp_size() > 1) {
    LOOM_RETURN_IF_ERROR(SumTiedEmbeddingGrads(*options_.pipeline_parallel, *model_));
    LOOM_ASSIGN_OR_RETURN(norm, PipelineGradNorm(*options_.pipeline_parallel, *model_, options_.tensor_parallel));
    optimizer_->StepShard(model_->params(), model_->grads(), static_cast<float>(lr), norm);
  } else if (tp_size() > 1) {
    LOOM_ASSIGN_OR_RETURN(norm, TensorParallelGradNorm(*options_.tensor_parallel, model_->layout(), model_->grads()));
    optimizer_->StepShard(model_->params(), model_->grads(), static_cast<float>(lr), norm);
  } else {
    norm = optimizer_->Step(model_->params(), model_->grads(), static_cast<float>(lr));
  }
  tokens_ += batch_tokens;

  StepReport r;
  r.step = step();
  r.tokens = tokens_;
  r.learning_rate = lr;
  r.grad_norm = norm;
  r.global_batch_tokens = batch_tokens;
  r.seq_len = seq_len;
  r.micro_batches = micro_batches;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.tokens_per_second = batch_tokens / std::max(r.seconds, 1e-9);
  return r;
}

void Trainer::BackwardFromRowGrads(const data::TokenBatch& mb, float* logits, const std::vector<double>& row_grad) {
  // Every target token of a row shares the row's gradient d loss / d (summed log-prob).
  std::vector<float> grad(mb.tokens());
  for (int r = 0; r < mb.batch_size; ++r) {
    std::fill(grad.begin() + static_cast<size_t>(r) * mb.seq_len, grad.begin() + static_cast<size_t>(r + 1) * mb.seq_len,
              static_cast<float>(row_grad[r]));
  }
  kernels::cpu::TokenLogProbsBackward(logits, mb.targets.data(), grad.data(), mb.tokens(), model_->config().vocab,
                                      logits);
  model_->Backward(logits);
}

absl::Status Trainer::RewardMicroBatch(const data::TokenBatch& mb, double grad_scale, double* sums) {
  const int64_t vocab = model_->config().vocab;
  if (options_.reward_token < 0 || options_.reward_token >= vocab) {
    return absl::FailedPreconditionError(absl::StrCat("reward token ", options_.reward_token, " is not in the vocabulary"));
  }
  const int pairs = mb.batch_size / 2;
  float* logits = model_->Forward(mb);
  std::vector<int> position(mb.batch_size);
  std::vector<double> rc(pairs), rr(pairs), dc(pairs), dr(pairs);
  for (int r = 0; r < mb.batch_size; ++r) {
    position[r] = LastTargetPosition(mb, r);
    if (position[r] < 0) return absl::FailedPreconditionError("a preference row has no completion tokens");
    const double reward = logits[(int64_t{r} * mb.seq_len + position[r]) * vocab + options_.reward_token];
    (r % 2 == 0 ? rc : rr)[r / 2] = reward;
  }
  const kernels::cpu::PreferenceResult result = kernels::cpu::BradleyTerryLossAndGrad(
      rc.data(), rr.data(), pairs, options_.reward_margin, grad_scale, dc.data(), dr.data());
  sums[0] += result.loss_sum;
  sums[1] += result.accuracy_sum;
  sums[2] += result.margin_sum;
  // The loss reads one logit per row: d loss / d logits is zero but there.
  std::fill(logits, logits + mb.tokens() * vocab, 0.0f);
  for (int r = 0; r < mb.batch_size; ++r) {
    logits[(int64_t{r} * mb.seq_len + position[r]) * vocab + options_.reward_token] =
        static_cast<float>(r % 2 == 0 ? dc[r / 2] : dr[r / 2]);
  }
  model_->Backward(logits);
  return absl::OkStatus();
}

absl::Status Trainer::PolicyGradientMicroBatch(const data::TokenBatch& mb, double grad_scale, double* loss_sum) {
  if (mb.advantages.size() != static_cast<size_t>(mb.batch_size)) {
    return absl::FailedPreconditionError("an rl batch has no advantages (use RlBatchSource)");
  }
  float* logits = nullptr;
  const std::vector<double> policy = RowLogProbSums(*model_, mb, &logits);
  std::vector<double> row_grad(mb.batch_size);
  for (int r = 0; r < mb.batch_size; ++r) {
    *loss_sum -= mb.advantages[r] * policy[r];
    row_grad[r] = -mb.advantages[r] * grad_scale;
  }
  BackwardFromRowGrads(mb, logits, row_grad);
  return absl::OkStatus();
}

absl::Status Trainer::PreferenceMicroBatch(const data::TokenBatch& mb, double grad_scale, double* sums) {
  if (mb.reference_logprobs.size() != static_cast<size_t>(mb.batch_size)) {
    return absl::FailedPreconditionError("a dpo batch has no reference log-probabilities (use PreferenceBatchSource)");
  }
  const int pairs = mb.batch_size / 2;
  float* logits = nullptr;
  const std::vector<double> policy = RowLogProbSums(*model_, mb, &logits);
  std::vector<double> pc(pairs), pr(pairs), rc(pairs), rr(pairs), dc(pairs), dr(pairs);
  for (int i = 0; i < pairs; ++i) {
    pc[i] = policy[2 * i];
    pr[i] = policy[2 * i + 1];
    rc[i] = mb.reference_logprobs[2 * i];
    rr[i] = mb.reference_logprobs[2 * i + 1];
  }
  const kernels::cpu::PreferenceResult result = kernels::cpu::DpoLossAndGrad(
      pc.data(), pr.data(), rc.data(), rr.data(), pairs, options_.dpo, grad_scale, dc.data(), dr.data());
  sums[0] += result.loss_sum;
  sums[1] += result.accuracy_sum;
  sums[2] += result.margin_sum;
  for (int i = 0; i < pairs; ++i) {
    sums[3] += options_.dpo.beta * (pc[i] - rc[i]);
    sums[4] += options_.dpo.beta * (pr[i] - rr[i]);
  }
  std::vector<double> row_grad(mb.batch_size);
  for (int r = 0; r < mb.batch_size; ++r) row_grad[r] = r % 2 == 0 ? dc[r / 2] : dr[r / 2];
  BackwardFromRowGrads(mb, logits, row_grad);
  return absl::OkStatus();
}

absl::StatusOr<std::string> Trainer::SaveCheckpoint(bool final) {
  if (options_.checkpoint_dir.empty())
    return absl::FailedPreconditionError("no checkpoint directory was given");
  const std::string dir =
      (std::filesystem::path(options_.checkpoint_dir) / CheckpointDirName(step())).string();
  // ZeRO-1 and tensor parallelism: every rank takes part in gathering the state rank 0 writes.
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> gathered, WholeOptimizer());
  std::unique_ptr<Transformer> whole_model;
  if (model_parallel()) {
    // Every rank joins the gather; only the writer keeps a whole model to write.
    LOOM_ASSIGN_OR_RETURN(std::vector<float> weights, WholeWeights());
    if (writer()) {
      whole_model = std::make_unique<Transformer>(whole_config_);
      std::copy(weights.begin(), weights.end(), whole_model->params());
    }
  }
  if (writer()) {
    loom::v1::CheckpointManifest manifest;
    manifest.set_plan_id(options_.plan_id);
    manifest.set_stage(options_.stage.name());
    manifest.set_step(step());
    manifest.set_tokens(tokens_);
    *manifest.mutable_model() = effective_model_;
    manifest.set_dp(dp_size());
    manifest.set_tp(tp_size());
    manifest.set_pp(pp_size());
    manifest.set_data_state(data_->SaveState());
    manifest.set_rng_state(rng_.SaveState());
    manifest.set_final(final);
    LOOM_RETURN_IF_ERROR(engine::SaveCheckpoint(dir, whole_model ? *whole_model : *model_,
                                                gathered ? gathered.get() : optimizer_.get(), manifest));
  }
  // The writer holds one copy of the (replicated or gathered) state; every rank returns once it
  // is durable. Model-parallel groups first, then the data group: each data-parallel peer of the
  // writer's group passes only after that group has seen the writer.
  if (options_.tensor_parallel) LOOM_RETURN_IF_ERROR(options_.tensor_parallel->Barrier());
  if (options_.pipeline_parallel) LOOM_RETURN_IF_ERROR(options_.pipeline_parallel->Barrier());
  if (options_.data_parallel) LOOM_RETURN_IF_ERROR(options_.data_parallel->Barrier());
  return dir;
}

absl::Status Trainer::GatherShards(const float* shard, float* whole) {
  const int64_t chunk = ShardChunk(), owned = optimizer_->shard_end() - optimizer_->shard_begin();
  zero1_chunk_.assign(chunk, 0.0f);  // the last rank's chunk may be short: padded with zeros
  std::copy(shard, shard + owned, zero1_chunk_.begin());
  zero1_padded_.resize(static_cast<size_t>(chunk) * dp_size());
  LOOM_RETURN_IF_ERROR(options_.data_parallel->AllGather(zero1_chunk_.data(), chunk, zero1_padded_.data()));
  std::copy(zero1_padded_.begin(), zero1_padded_.begin() + model_->num_params(), whole);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Optimizer>> Trainer::WholeOptimizer() {
  if (model_parallel()) {
    auto whole = std::make_unique<Optimizer>(*whole_layout_, optimizer_->settings());
    LOOM_RETURN_IF_ERROR(GatherWhole(optimizer_->first_moment().data(), whole->first_moment().data()));
    if (whole->has_second_moment()) {
      LOOM_RETURN_IF_ERROR(GatherWhole(optimizer_->second_moment().data(), whole->second_moment().data()));
    }
    whole->set_step(optimizer_->step());
    return whole;
  }
  if (!zero1()) return std::unique_ptr<Optimizer>();
  auto whole = std::make_unique<Optimizer>(model_->layout(), optimizer_->settings());
  LOOM_RETURN_IF_ERROR(GatherShards(optimizer_->first_moment().data(), whole->first_moment().data()));
  if (whole->has_second_moment()) {
    LOOM_RETURN_IF_ERROR(GatherShards(optimizer_->second_moment().data(), whole->second_moment().data()));
  }
  whole->set_step(optimizer_->step());
  return whole;
}

void Trainer::PruneCheckpoints() {
  // Keep the newest keep_last checkpoints; the final one is always the newest. Older ones are
  // removed only after a newer one is durable.
  const int keep = options_.stage.checkpoint().keep_last();
  if (keep <= 0) return;
  const std::vector<std::string> dirs = ListCheckpointDirs(options_.checkpoint_dir);
  std::error_code ec;
  for (size_t i = 0; i + keep < dirs.size(); ++i) std::filesystem::remove_all(dirs[i], ec);
}

absl::Status Trainer::Run(const std::function<void(const StepReport&)>& on_step,
                          const std::function<void(const std::string&)>& on_checkpoint) {
  const int every = options_.stage.checkpoint().every_steps();
  while (!Done()) {
    absl::StatusOr<StepReport> report = Step();
    if (!report.ok()) return report.status();
    if (on_step) on_step(*report);
    const bool last = Done();
    if (!options_.checkpoint_dir.empty() && (last || (every > 0 && report->step % every == 0))) {
      absl::StatusOr<std::string> dir = SaveCheckpoint(last);
      if (!dir.ok()) return dir.status();
      if (on_checkpoint) on_checkpoint(*dir);
      if (writer()) PruneCheckpoints();
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::engine
