#include "worker/engine/stages/training_stage.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>

#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "worker/engine/evaluation/preference_accuracy.h"
#include "worker/engine/model/transformer_config.h"
#include "worker/engine/training/model_flops.h"
#include "worker/engine/training/rank_time.h"

namespace loom::engine {
namespace {

// The measures a training stage takes of its model, and the whole model they read.
class Measures {
 public:
  Measures(const StageContext& context, const TrainingSetup& setup, Trainer& trainer, StageReporter& reporter)
      : context_(context), setup_(setup), trainer_(trainer), reporter_(reporter) {}

  absl::Status Open() {
    const StageRun& run = context_.run();
    const loom::v1::Stage& stage = run.stage;
    // Held-out loss: the first data-parallel rank measures (and reports) it.
    if (run.layout.dp_rank == 0) {
      LOOM_ASSIGN_OR_RETURN(evaluator_, context_.OpenEvaluator());
    }
    // Context extension: held-out loss at the short and the long length, before training and at
    // the end, so the gain at the long length and any loss at the short one are visible. Short:
    // the schedule's first length (or a quarter of the long one when it has a single length).
    if (stage.kind() == loom::v1::STAGE_KIND_CONTEXT_EXTENSION && evaluator_ &&
        !stage.seq_len_schedule().empty()) {
      const int long_len = stage.seq_len_schedule().rbegin()->seq_len();
      const int first = stage.seq_len_schedule(0).seq_len();
      lengths_ = {first != long_len ? first : std::max(16, long_len / 4), long_len};
    }
    return absl::OkStatus();
  }

  bool evaluates() const {
    return evaluator_ || math() || !setup_.heldout_pairs.empty();
  }
  bool math() const { return context_.stage().eval().math_accuracy() && context_.run().layout.dp_rank == 0; }

  // Before training: the starting point of the held-out measures that training should move.
  absl::Status Before(const std::function<void(const ProgressReport&)>& report) {
    if (!setup_.heldout_pairs.empty() || (math() && trainer_.step() == 0)) {
      ProgressReport p = Now();
      if (!setup_.heldout_pairs.empty()) Preferences("/before", &p);
      if (math() && trainer_.step() == 0) {
        LOOM_ASSIGN_OR_RETURN(Transformer * model, WholeModel());
        if (model != nullptr) LOOM_RETURN_IF_ERROR(context_.MeasureMath(*model, p.step, "/before", &p, reporter_));
      }
      report(p);
    }
    if (!lengths_.empty()) {
      ProgressReport p = Now();
      LOOM_ASSIGN_OR_RETURN(Transformer * model, WholeModel());
      if (model != nullptr) {
        LOOM_RETURN_IF_ERROR(Lengths(*model, "/before", &p));
        report(p);
      }
    }
    return absl::OkStatus();
  }

  // Every eval.every_steps steps and at the end, into the step's report.
  absl::Status After(const StepReport& r, ProgressReport* p) {
    LOOM_ASSIGN_OR_RETURN(Transformer * model, WholeModel());
    if (model == nullptr) return absl::OkStatus();  // another rank of the group measures
    absl::Status status;
    if (evaluator_) {
      absl::StatusOr<std::map<std::string, double>> losses =
          evaluator_->Evaluate(*model, r.seq_len, context_.stage().parallel().micro_batch_size());
      if (!losses.ok()) {
        status.Update(losses.status());
      } else {
        for (const auto& [set, loss] : *losses) {
          p->eval_loss[set] = loss;
          reporter_.Log(absl::StrFormat("eval step %d %s loss %.6f", r.step, set, loss));
        }
      }
    }
    if (!lengths_.empty() && trainer_.Done()) status.Update(Lengths(*model, "", p));
    if (context_.stage().eval().math_accuracy()) status.Update(context_.MeasureMath(*model, r.step, "", p, reporter_));
    if (!setup_.heldout_pairs.empty()) Preferences("", p);
    return status;
  }

 private:
  ProgressReport Now() const {
    ProgressReport p;
    p.step = trainer_.step();
    p.tokens = trainer_.tokens();
    return p;
  }

  // What evaluations read: under tensor or pipeline parallelism a whole copy of the model,
  // gathered from the group (a collective every tensor rank and stage joins), evaluated by the
  // first of them alone: null on the others, which skip the evaluation.
  absl::StatusOr<Transformer*> WholeModel() {
    const RankLayout& layout = context_.run().layout;
    if (!layout.model_parallel()) return &trainer_.model();
    LOOM_ASSIGN_OR_RETURN(std::vector<float> weights, trainer_.WholeWeights());
    if (layout.tp_rank != 0 || layout.pp_rank != 0) return nullptr;
    if (!whole_model_) {
      LOOM_ASSIGN_OR_RETURN(TransformerConfig config, TransformerConfig::FromProto(trainer_.effective_model()));
      whole_model_ = std::make_unique<Transformer>(config);
    }
    std::copy(weights.begin(), weights.end(), whole_model_->params());
    return whole_model_.get();
  }

  absl::Status Lengths(Transformer& model, const std::string& suffix, ProgressReport* p) {
    for (int len : lengths_) {
      LOOM_ASSIGN_OR_RETURN(auto losses, evaluator_->Evaluate(model, len, 1));
      for (const auto& [set, loss] : losses) {
        const std::string key = absl::StrCat(set, "@", len, suffix);
        p->eval_loss[key] = loss;
        reporter_.Log(absl::StrFormat("eval step %d %s loss %.6f", trainer_.step(), key, loss));
      }
    }
    return absl::OkStatus();
  }

  // dpo: log p(chosen) > log p(rejected); reward_model: r(chosen) > r(rejected).
  void Preferences(const std::string& suffix, ProgressReport* p) {
    const PreferenceAccuracy acc =
        setup_.reward_token >= 0
            ? EvaluateRewardAccuracy(trainer_.model(), setup_.heldout_pairs, setup_.pairs_seq_len,
                                     context_.pad_id(), setup_.reward_token)
            : EvaluatePreferenceAccuracy(trainer_.model(), setup_.heldout_pairs, setup_.pairs_seq_len,
                                         context_.pad_id());
    const std::string& set = context_.stage().dataset().source();
    p->eval_metrics[set + "/accuracy" + suffix] = acc.accuracy;
    p->eval_metrics[set + "/margin" + suffix] = acc.mean_margin;
    reporter_.Log(absl::StrFormat("eval step %d %s preference accuracy%s %.6f margin %.4f (%d pairs)", trainer_.step(),
                                  set, suffix, acc.accuracy, acc.mean_margin, acc.pairs));
  }

  const StageContext& context_;
  const TrainingSetup& setup_;
  Trainer& trainer_;
  StageReporter& reporter_;
  std::unique_ptr<Evaluator> evaluator_;
  std::vector<int> lengths_;
  std::unique_ptr<Transformer> whole_model_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreferenceBatchSource>> OpenPreferencePairs(const StageContext& context,
                                                                          bool with_reference,
                                                                          TrainingSetup* setup) {
  const loom::v1::Stage& stage = context.stage();
  PreferenceSourceOptions options;
  options.path = context.DatasetPath();
  options.seed = stage.seed();
  options.epochs = stage.dataset().epochs();
  options.with_reference = with_reference;
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PreferenceBatchSource> pairs,
                        PreferenceBatchSource::Open(options, context.tokenizer()));
  setup->data = pairs.get();
  setup->pairs_seq_len = FirstSeqLen(stage);
  setup->schedule_tokens = pairs->pairs() * 2 * setup->pairs_seq_len * options.epochs;
  if (context.run().layout.dp_rank == 0) {
    LOOM_ASSIGN_OR_RETURN(setup->heldout_pairs,
                          ReadPreferenceExamples(context.SourceSplit(stage.dataset().source(), "heldout"),
                                                 data::ChatTemplate::kChatML, context.tokenizer()));
  }
  return pairs;
}

namespace {

// The chat template a stage's examples are rendered with, as its checkpoints record it; "" for
// stages of plain text.
std::string ChatTemplateName(const loom::v1::Stage& stage) {
  switch (stage.kind()) {
    case loom::v1::STAGE_KIND_SFT:
      return stage.sft().template_() == loom::v1::SftConfig::TEMPLATE_ALPACA ? "alpaca" : "chatml";
    case loom::v1::STAGE_KIND_DPO:
    case loom::v1::STAGE_KIND_REWARD_MODEL:
    case loom::v1::STAGE_KIND_RL:
      return "chatml";
    default:
      return "";
  }
}

}  // namespace

absl::Status RunTraining(const StageContext& context, const TrainingSetup& setup, StageReporter& reporter) {
  const StageRun& run = context.run();
  TrainerOptions options;
  options.model = run.model;
  options.stage = run.stage;
  options.plan_id = run.plan_id;
  options.checkpoint_dir = run.checkpoint_dir;
  options.prune_checkpoints = run.prune_checkpoints;
  options.fail_saves_at_steps = run.fail_saves_at_steps;
  options.extra_compute = run.extra_compute;
  options.resume_from = run.resume_from;
  options.init_from = run.inputs.from();
  options.max_steps = run.max_steps;
  options.schedule_tokens = setup.schedule_tokens;
  options.parallel = context.groups();
  options.objective = setup.objective;
  if (context.has_tokenizer()) {
    options.tokenizer_path = std::filesystem::absolute(context.tokenizer().path()).string();
    options.tokenizer_sha256 = context.tokenizer().hash();
  }
  options.chat_template = ChatTemplateName(run.stage);
  std::unique_ptr<Trainer> trainer;
  {
    RankPhaseScope loading(RankPhase::kLoad);
    LOOM_ASSIGN_OR_RETURN(trainer, Trainer::Create(options, setup.data));
  }
  reporter.Log(absl::StrFormat("stage %s: %d parameters on this rank, from step %d", run.stage.name(),
                               trainer->model().num_params(), trainer->step()));
  if (setup.on_trainer) setup.on_trainer(*trainer);
  // The whole model (not this rank's pipeline stage of it), for the MFU estimate.
  const absl::StatusOr<TransformerConfig> whole_model = TransformerConfig::FromProto(run.model);

  // Reports fail the stage at its end, not in the middle of a collective.
  absl::Status report_status;
  auto report = [&](const ProgressReport& p) { report_status.Update(reporter.Progress(p)); };
  Measures measures(context, setup, *trainer, reporter);
  LOOM_RETURN_IF_ERROR(measures.Open());
  {
    RankPhaseScope evaluating(RankPhase::kEvaluation);
    LOOM_RETURN_IF_ERROR(measures.Before(report));
  }

  const loom::v1::EvalConfig& eval = run.stage.eval();
  const int every = eval.has_every_steps() ? eval.every_steps() : 0;
  absl::Status eval_status;
  absl::Time checkpoint_start = MonotonicNow();
  const absl::Status status = trainer->Run(
      [&](const StepReport& r) {
        ProgressReport p;
        p.step_done = true;
        p.step = r.step;
        p.tokens = r.tokens;
        p.loss = r.loss;
        p.tokens_per_second = r.tokens_per_second;
        p.learning_rate = r.learning_rate;
        p.grad_norm = r.grad_norm;
        p.global_batch_tokens = r.global_batch_tokens;
        p.seq_len = r.seq_len;
        p.mix_weights = setup.data->MixWeights();
        p.source_tokens = setup.data->SourceTokens();
        p.train_metrics = r.metrics;
        p.step_seconds = r.seconds;
        p.compute_seconds = r.compute_seconds;
        p.communication_wait_seconds = r.collective_seconds;
        p.data_wait_seconds = r.data_wait_seconds;
        if (whole_model.ok()) {
          p.model_flops_per_token = ModelFlopsPerToken(*whole_model, r.seq_len, ModelPass::kTraining);
        }
        if (measures.evaluates() && ((every > 0 && r.step % every == 0) || trainer->Done())) {
          RankPhaseScope evaluating(RankPhase::kEvaluation);
          eval_status.Update(measures.After(r, &p));
        }
        report(p);
        checkpoint_start = MonotonicNow();  // a checkpoint, if any, is written right after the step
      },
      [&](const std::string& dir, const absl::Status& written) {
        CheckpointWritten c;
        if (!written.ok()) {
          c.error = std::string(written.message());
          reporter.Log(absl::StrCat("checkpoint step ", trainer->step(), " was not saved: ", c.error,
                                    "; training goes on and the next interval tries again"));
        }
        c.path = dir;
        c.step = trainer->step();
        c.tokens = trainer->tokens();
        // The writer writes the whole state; every rank reports its part as durable once the
        // trainer's barrier has seen the write finish, so the coordinator commits on all.
        c.num_shards = std::max(1, run.layout.world_size());
        c.shard = run.layout.rank();
        c.final = trainer->Done();
        c.save_seconds = absl::ToDoubleSeconds(MonotonicNow() - checkpoint_start);
        report_status.Update(reporter.Checkpoint(c));
      });
  // An evaluation that failed came before whatever failed training after it.
  LOOM_RETURN_IF_ERROR(eval_status);
  LOOM_RETURN_IF_ERROR(status);
  return report_status;
}

}  // namespace loom::engine
