#include "worker/engine/training/trainer.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/checkpoint_io.h"
#include "common/plan_resolve.h"
#include "common/rank_exit.h"
#include "common/rank_lifecycle.h"
#include "common/status_macros.h"
#include "worker/engine/parallel/pipeline_parallel.h"
#include "worker/engine/training/language_model_objective.h"
#include "worker/engine/training/rank_time.h"
#include "worker/engine/training/schedules.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainerOptions options, BatchSource* data) {
  std::unique_ptr<Trainer> trainer(new Trainer(std::move(options), data));
  if (absl::Status s = trainer->Init(); !s.ok()) return s;
  return trainer;
}

absl::Status Trainer::Init() {
  const loom::v1::Stage& stage = options_.stage;
  if (!options_.objective) options_.objective = std::make_shared<LanguageModelObjective>();
  effective_model_ = options_.model;
  ApplyModelDefaults(&effective_model_);  // checkpoints record concrete values
  // A stage that starts from (or resumes) a checkpoint keeps that checkpoint's RoPE unless it
  // sets its own: an SFT stage after a context extension must not fall back to the old base.
  const std::string& source = !options_.resume_from.empty() ? options_.resume_from : options_.init_from;
  if (!source.empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> read = ReadCheckpointManifest(source, /*verify=*/false);
    if (!read.ok()) return source == options_.resume_from ? ResumeCheckpointBad(read.status()) : read.status();
    const loom::v1::CheckpointManifest& manifest = *read;
    if (manifest.model().has_rope_theta()) effective_model_.set_rope_theta(manifest.model().rope_theta());
    if (manifest.model().has_rope_scaling()) *effective_model_.mutable_rope_scaling() = manifest.model().rope_scaling();
    if (options_.chat_template.empty() && manifest.metadata().contains("chat_template")) {
      options_.chat_template = manifest.metadata().at("chat_template");
    }
  }
  if (stage.has_rope()) {
    if (stage.rope().has_theta()) effective_model_.set_rope_theta(stage.rope().theta());
    if (stage.rope().has_scaling()) *effective_model_.mutable_rope_scaling() = stage.rope().scaling();
  }
  ParallelModelOptions parallel;
  LOOM_ASSIGN_OR_RETURN(parallel.whole, TransformerConfig::FromProto(effective_model_));
  parallel.groups = options_.parallel;
  parallel.optimizer = OptimizerSettings::FromProto(stage.optimizer());
  parallel.zero1 = stage.parallel().zero1();
  parallel.bucket_floats = options_.bucket_floats;
  LOOM_RETURN_IF_ERROR(options_.objective->Check(parallel.whole));
  LOOM_ASSIGN_OR_RETURN(parallel_, ParallelModel::Create(std::move(parallel)));
  // Validation keeps these plans off model parallelism; the engine refuses them too rather than
  // train them wrong (their losses read whole-vocabulary logits, a teacher runs whole).
  if (parallel_->model_parallel() && !options_.objective->pipelined()) {
    return absl::UnimplementedError(absl::StrCat("stage '", stage.name(), "': ", options_.objective->name(),
                                                 " does not run with parallel.tp ", parallel_->tp_size(),
                                                 ", parallel.pp ", parallel_->pp_size(), "; use tp: 1 and pp: 1 for it"));
  }

  rng_ = Random(stage.seed());
  if (!options_.resume_from.empty()) {
    absl::StatusOr<loom::v1::CheckpointManifest> resumed = parallel_->Resume(options_.resume_from);
    if (!resumed.ok()) return ResumeCheckpointBad(resumed.status());  // corrupt or incomplete: the coordinator falls back
    const loom::v1::CheckpointManifest& manifest = *resumed;
    LOOM_RETURN_IF_ERROR(data_->RestoreState(manifest.data_state()));
    if (!rng_.RestoreState(manifest.rng_state())) {
      return absl::DataLossError(absl::StrCat("checkpoint ", options_.resume_from, " has a malformed RNG state"));
    }
    tokens_ = manifest.tokens();
  } else if (!options_.init_from.empty()) {
    LOOM_RETURN_IF_ERROR(parallel_->LoadWeights(options_.init_from));
  } else {
    parallel_->InitWeights(rng_.NextU64());
  }
  return absl::OkStatus();
}

bool Trainer::Done() const {
  if (options_.max_steps > 0 && step() >= options_.max_steps) return true;
  if (data_->Exhausted()) return true;
  return options_.stage.tokens() > 0 && tokens_ >= options_.stage.tokens();
}

absl::StatusOr<StepReport> Trainer::Step() {
  const auto start = std::chrono::steady_clock::now();
  RankPhaseScope compute(RankPhase::kCompute);
  const loom::v1::Stage& stage = options_.stage;
  Objective& objective = *options_.objective;
  const int64_t batch_tokens = GlobalBatchTokens(stage, tokens_);
  const int seq_len = SeqLen(stage, tokens_);
  const int micro = stage.parallel().micro_batch_size();
  const int dp = parallel_->dp_size(), rank = parallel_->dp_rank();
  if (seq_len < 2 || batch_tokens % (int64_t{seq_len} * micro * dp) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "global batch ", batch_tokens, " tokens is not a multiple of seq_len ", seq_len, " x micro_batch_size ",
        micro, " x dp ", dp, " at ", tokens_, " tokens (validate the plan)"));
  }
  if (const int rows = objective.rows_per_example(); micro % rows != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a ", objective.name(), " stage needs ", rows == 2 ? "an even" : absl::StrCat("a multiple of ", rows, " as"),
        " parallel.micro_batch_size (an example's ", rows, " rows share a micro-batch); it is ", micro));
  }
  const int global_sequences = static_cast<int>(batch_tokens / seq_len);
  // Time spent waiting (for data, in collectives); the rest of the step is this rank's compute.
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  auto mark = std::chrono::steady_clock::now();
  {
    RankPhaseScope waiting(RankPhase::kDataWait);
    LOOM_RETURN_IF_ERROR(data_->Next(seq_len, global_sequences, rank, dp, &batch_));
  }
  const double data_wait = since(mark);
  double collective = 0;

  // The loss is a mean over the global batch (its target tokens, pairs or rows), whichever rank
  // holds them.
  double targets = 0;
  for (int32_t t : batch_.targets) targets += t != data::kIgnoreIndex;
  mark = std::chrono::steady_clock::now();
  if (data_parallel()) LOOM_RETURN_IF_ERROR(data_parallel()->AllReduceSum(&targets, 1));
  collective += since(mark);
  if (targets == 0) return absl::FailedPreconditionError("a training batch has no target tokens");
  const double normalizer = objective.Normalizer(targets, global_sequences);
  const double scale = 1.0 / normalizer;

  Transformer& model = parallel_->model();
  if (options_.extra_compute > absl::ZeroDuration()) absl::SleepFor(options_.extra_compute);
  model.ZeroGrads();
  std::vector<double> sums(1 + objective.measures().size(), 0.0);
  const int micro_batches = batch_.batch_size / micro;
  if (parallel_->pp_size() > 1) {
    std::vector<data::TokenBatch> mbs;
    for (int m = 0; m < micro_batches; ++m) mbs.push_back(SliceBatch(batch_, m * micro, micro));
    Communicator& pipeline = *options_.parallel.pipeline;
    LOOM_ASSIGN_OR_RETURN(
        sums[0], RunOneForwardOneBackward(pipeline, model, mbs, [&](const data::TokenBatch& mb, float* logits) {
          return objective.LogitsLoss(model, mb, logits, scale);
        }));
    // The last stage has the loss; every stage reports it.
    LOOM_RETURN_IF_ERROR(pipeline.AllReduceSum(sums.data(), 1));
  } else {
    for (int m = 0; m < micro_batches; ++m) {
      // The last micro-batch's backward completes each layer's gradients: send them as it goes.
      if (m + 1 == micro_batches) parallel_->BeginLastBackward();
      LOOM_RETURN_IF_ERROR(objective.MicroBatch(model, SliceBatch(batch_, m * micro, micro), scale, sums.data()));
    }
  }
  mark = std::chrono::steady_clock::now();
  LOOM_ASSIGN_OR_RETURN(const double communication_wait, parallel_->ReduceGradients());
  MoveRankPhaseSeconds(RankPhase::kCompute, RankPhase::kCommunication, communication_wait);
  if (data_parallel()) LOOM_RETURN_IF_ERROR(data_parallel()->AllReduceSum(sums.data(), static_cast<int64_t>(sums.size())));
  collective += since(mark);

  const int64_t total = stage.tokens() > 0 ? stage.tokens() : options_.schedule_tokens;
  const double lr = LearningRate(stage.lr_schedule(), stage.optimizer().lr(), tokens_, total);
  LOOM_ASSIGN_OR_RETURN(const double norm, parallel_->ApplyOptimizer(static_cast<float>(lr)));
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
  r.communication_wait_seconds = communication_wait;
  mark = std::chrono::steady_clock::now();
  LOOM_RETURN_IF_ERROR(AddBatchMetrics(&r));
  collective += since(mark);
  r.seconds = since(start);
  r.data_wait_seconds = data_wait;
  r.collective_seconds = collective;
  r.compute_seconds = std::max(0.0, r.seconds - data_wait - collective);
  r.loss = sums[0] / normalizer;
  const std::vector<std::string> measures = objective.measures();
  for (size_t i = 0; i < measures.size(); ++i) r.metrics[measures[i]] = sums[i + 1] / normalizer;
  return r;
}

absl::StatusOr<bool> Trainer::AgreeOnCheckpointAndStop() {
  // One small all-reduce per group and step: data, then tensor, then pipeline spreads any rank's
  // request to every rank of the layout.
  RankPhaseScope communication(RankPhase::kCommunication);
  double requested = CheckpointAndStopRequested() ? 1 : 0;
  for (Communicator* group : {options_.parallel.data, options_.parallel.tensor, options_.parallel.pipeline}) {
    if (group != nullptr && group->size() > 1) LOOM_RETURN_IF_ERROR(group->AllReduceSum(&requested, 1));
  }
  return requested > 0;
}

absl::Status Trainer::AddBatchMetrics(StepReport* r) {
  for (const auto& [name, value] : data_->BatchMetrics()) {
    double v = value;
    if (data_parallel()) {
      LOOM_RETURN_IF_ERROR(data_parallel()->AllReduceSum(&v, 1));
      v /= parallel_->dp_size();
    }
    r->metrics[name] = v;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Trainer::SaveCheckpoint(bool final) {
  absl::Status written;
  LOOM_ASSIGN_OR_RETURN(std::string dir, Save(final, &written));
  LOOM_RETURN_IF_ERROR(written);
  return dir;
}

absl::StatusOr<std::string> Trainer::Save(bool final, absl::Status* written) {
  if (options_.checkpoint_dir.empty()) return absl::FailedPreconditionError("no checkpoint directory was given");
  const std::string dir = (std::filesystem::path(options_.checkpoint_dir) / CheckpointDirName(step())).string();
  loom::v1::CheckpointManifest manifest;
  manifest.set_plan_id(options_.plan_id);
  manifest.set_stage(options_.stage.name());
  manifest.set_step(step());
  manifest.set_tokens(tokens_);
  *manifest.mutable_model() = effective_model_;
  manifest.set_data_state(data_->SaveState());
  manifest.set_rng_state(rng_.SaveState());
  manifest.set_final(final);
  manifest.set_tokenizer_sha256(options_.tokenizer_sha256);
  if (!options_.tokenizer_path.empty()) (*manifest.mutable_metadata())["tokenizer"] = options_.tokenizer_path;
  if (!options_.chat_template.empty()) (*manifest.mutable_metadata())["chat_template"] = options_.chat_template;
  ParallelModel::SaveRetry retry;
  // The final checkpoint is the stage's result: worth waiting for a disk that frees up.
  retry.tries = final ? kFinalSaveTries : 1;
  if (options_.fail_saves_at_steps.count(step()) > 0) {
    // The first try fails, as on a disk that is full for a moment.
    retry.inject = [step = step(), tries = 0]() mutable {
      return ++tries > 1 ? absl::OkStatus()
                         : absl::ResourceExhaustedError(absl::StrCat(
                               "No space left on device (injected at step ", step, " by LOOM_TEST_FAIL_SAVES)"));
    };
  }
  RankPhaseScope saving(RankPhase::kCheckpointSave);
  LOOM_RETURN_IF_ERROR(parallel_->Save(dir, std::move(manifest), retry, written));
  return dir;
}

void Trainer::PruneCheckpoints() {
  // Keep the newest keep_last checkpoints; the final one is always the newest. Older ones are
  // removed only after a newer one is durable.
  const int keep = options_.stage.checkpoint().keep_last();
  if (keep <= 0 || !CheckWriteFence().ok()) return;
  const std::vector<std::string> dirs = ListCheckpointDirs(options_.checkpoint_dir);
  std::error_code ec;
  for (size_t i = 0; i + keep < dirs.size(); ++i) std::filesystem::remove_all(dirs[i], ec);
}

absl::Status Trainer::Run(const std::function<void(const StepReport&)>& on_step,
                          const std::function<void(const std::string&, const absl::Status&)>& on_checkpoint) {
  const int every = options_.stage.checkpoint().every_steps();
  while (!Done()) {
    LOOM_ASSIGN_OR_RETURN(StepReport report, Step());
    if (on_step) on_step(report);
    const bool last = Done();
    // Drained or stopping: save here, with every peer (any rank's request stops them all), and
    // stop. Without the attempt's write lease (its worker has left) the save fails and so does
    // the rank, as a transient end.
    LOOM_ASSIGN_OR_RETURN(const bool preempt, AgreeOnCheckpointAndStop());
    if (preempt && !last && !options_.checkpoint_dir.empty()) {
      absl::Status written;
      LOOM_ASSIGN_OR_RETURN(std::string dir, Save(/*final=*/false, &written));
      if (!written.ok()) return written;
      if (on_checkpoint) on_checkpoint(dir, written);
      return Preempted(report.step);
    }
    // Stopping without a checkpoint to write: this step's is not written (its peers may go on).
    if (StopRequested() && !last) {
      return absl::UnavailableError(absl::StrCat("stopped after step ", report.step,
                                                 " on SIGTERM (the worker is stopping; the job resumes elsewhere)"));
    }
    if (!options_.checkpoint_dir.empty() && (last || (every > 0 && report.step % every == 0))) {
      absl::Status written;
      LOOM_ASSIGN_OR_RETURN(std::string dir, Save(last, &written));
      if (!written.ok()) {
        // The stage's result could not be written, or this attempt was replaced: stop. Any other
        // failed save costs this checkpoint only; the next interval tries again.
        if (last) return written;
        if (absl::Status fence = CheckWriteFence(); !fence.ok()) return fence;
      }
      if (on_checkpoint) on_checkpoint(dir, written);
      if (written.ok() && parallel_->writer() && options_.prune_checkpoints) PruneCheckpoints();
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::engine
