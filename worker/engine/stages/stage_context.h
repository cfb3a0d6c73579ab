// What the runners of stages/ share before and around their work, written once: the stage's
// tokenizer (checked against its model), the rank's process groups, where a prepared source's
// splits live, the sampling options, a reward model as a scorer, held-out evaluation options and
// math accuracy as measures.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/tokenizer.h"
#include "worker/engine/evaluation/evaluator.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/row_scores.h"
#include "worker/engine/model/transformer.h"
#include "worker/engine/parallel/process_groups.h"
#include "worker/engine/stages/stage_runner.h"

namespace loom::engine {

class StageContext {
 public:
  // Loads the stage's tokenizer (data.tokenizer, default <data.dir>/tokenizer.model or
  // tokenizer.json, data::DefaultTokenizerPath; a model
  // whose vocab_size is smaller is refused) and, with `join_groups`, joins the rank's groups. A
  // stage given a token_source may have no data.dir: it then has no tokenizer, and what needs
  // one (held-out sets, math accuracy) fails with a message saying so.
  static absl::StatusOr<StageContext> Open(const StageRun& run, bool join_groups);

  const StageRun& run() const { return *run_; }
  const loom::v1::Stage& stage() const { return run_->stage; }
  const data::Tokenizer& tokenizer() const { return *tokenizer_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  ParallelGroups groups() const { return groups_.groups(); }
  // The padding id rows are filled with (the tokenizer's pad, else its end of sequence).
  int32_t pad_id() const;

  // <data.dir>/<source>/<split>.jsonl: a prepared chat or preference source's split
  // ("train", "heldout").
  std::string SourceSplit(const std::string& source, const std::string& split) const;
  // <data.dir>/<dataset.source>/train.jsonl, or the dataset of the stage named by
  // dataset.from_stage (inputs.dataset).
  std::string DatasetPath() const;

  // The held-out loss evaluator of eval.sets, or null when the stage names none.
  absl::StatusOr<std::unique_ptr<Evaluator>> OpenEvaluator() const;
  // The model of a checkpoint input (inputs.reference, inputs.from, ...), which `field` of the
  // stage names (for the error when it was not resolved).
  absl::StatusOr<std::unique_ptr<Transformer>> LoadInput(const std::string& path, const std::string& field) const;
  // The reward model a stage's scorer names (inputs.reward_model), as a scorer of completions:
  // its end-of-turn logit, as reward_model stages train it. Null when the verifier scores.
  struct RewardModel {
    std::unique_ptr<Transformer> model;
    RewardScorer scorer;  // reads `model`
  };
  absl::StatusOr<std::unique_ptr<RewardModel>> LoadRewardModel(const loom::v1::Scorer& scorer) const;
  // Math accuracy of `model` on eval.math_source's held-out problems, into `report` as
  // eval_metrics "<source>/accuracy<suffix>" (and "/no_answer", "/problems"); the result and the
  // first answers go to the log.
  absl::Status MeasureMath(const Transformer& model, int64_t step, const std::string& suffix,
                           ProgressReport* report, StageReporter& reporter) const;

 private:
  StageContext() = default;
  absl::Status NoData(const std::string& field) const;
  const StageRun* run_ = nullptr;
  std::unique_ptr<data::Tokenizer> tokenizer_;
  ProcessGroups groups_;
};

// The stage's first sequence length (its only one for pair and sampling stages); 256 without a
// schedule.
int FirstSeqLen(const loom::v1::Stage& stage);

// A stage's sampling block (defaults resolved) as the generator's options, seeded by the stage.
SamplingOptions SamplingFromProto(const loom::v1::SamplingConfig& config, uint64_t seed);

// "<stage>: <message>", for errors that name the stage.
absl::Status StageError(const loom::v1::Stage& stage, absl::StatusCode code, const std::string& message);

}  // namespace loom::engine
