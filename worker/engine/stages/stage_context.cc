#include "worker/engine/stages/stage_context.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/proto_names.h"
#include "common/status_macros.h"
#include "data/chat.h"
#include "data/tokenizer_path.h"
#include "worker/engine/evaluation/math_eval.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/training/rank_time.h"

namespace loom::engine {

absl::Status StageError(const loom::v1::Stage& stage, absl::StatusCode code, const std::string& message) {
  return absl::Status(code, absl::StrCat("stage '", stage.name(), "': ", message));
}

absl::StatusOr<StageContext> StageContext::Open(const StageRun& run, bool join_groups) {
  StageContext c;
  c.run_ = &run;
  const std::string& data_dir = run.data.dir();
  if (data_dir.empty() && run.token_source != nullptr) {
    if (join_groups) {
      RankPhaseScope joining(RankPhase::kRendezvous);
      LOOM_ASSIGN_OR_RETURN(c.groups_, ProcessGroups::Join(run.layout, run.open_store, run.group_timeout, run.collective_host));
    }
    return c;
  }
  if (data_dir.empty()) return absl::InvalidArgumentError("the stage has no data.dir (prepared data directory)");
  const std::string tokenizer_path =
      run.data.tokenizer().empty() ? data::DefaultTokenizerPath(data_dir) : run.data.tokenizer();
  LOOM_ASSIGN_OR_RETURN(c.tokenizer_, data::Tokenizer::Load(tokenizer_path));
  if (run.model.vocab_size() > 0 && c.tokenizer_->vocab_size() > run.model.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("model.vocab_size ", run.model.vocab_size(),
                                                   " is smaller than the tokenizer's ", c.tokenizer_->vocab_size(),
                                                   " (", tokenizer_path, ")"));
  }
  if (join_groups) {
    RankPhaseScope joining(RankPhase::kRendezvous);
    LOOM_ASSIGN_OR_RETURN(c.groups_, ProcessGroups::Join(run.layout, run.open_store, run.group_timeout, run.collective_host));
  }
  return c;
}

absl::Status StageContext::NoData(const std::string& field) const {
  return StageError(stage(), absl::StatusCode::kFailedPrecondition,
                    absl::StrCat(field, " needs prepared data (data.dir) and its tokenizer"));
}

int32_t StageContext::pad_id() const {
  return tokenizer_->pad_id() >= 0 ? tokenizer_->pad_id() : tokenizer_->eos_id();
}

std::string StageContext::SourceSplit(const std::string& source, const std::string& split) const {
  return absl::StrCat(run_->data.dir(), "/", source, "/", split, ".jsonl");
}

std::string StageContext::DatasetPath() const {
  const loom::v1::DatasetRef& dataset = stage().dataset();
  return dataset.source().empty() ? run_->inputs.dataset() : SourceSplit(dataset.source(), "train");
}

absl::StatusOr<std::unique_ptr<Evaluator>> StageContext::OpenEvaluator() const {
  const loom::v1::EvalConfig& eval = stage().eval();
  if (eval.sets().empty()) return std::unique_ptr<Evaluator>();
  if (!tokenizer_) return NoData("eval.sets");
  EvalOptions options;
  options.data_dir = run_->data.dir();
  options.sets.assign(eval.sets().begin(), eval.sets().end());
  if (eval.has_max_tokens()) options.max_tokens = eval.max_tokens();
  options.tokenizer_hash = tokenizer_->hash();
  options.vocab_size = tokenizer_->vocab_size();
  return Evaluator::Open(options);
}

absl::StatusOr<std::unique_ptr<Transformer>> StageContext::LoadInput(const std::string& path,
                                                                    const std::string& field) const {
  if (path.empty()) {
    return StageError(stage(), absl::StatusCode::kFailedPrecondition,
                      absl::StrCat(field, " was not resolved to a checkpoint"));
  }
  return LoadModel(path);
}

absl::StatusOr<std::unique_ptr<StageContext::RewardModel>> StageContext::LoadRewardModel(
    const loom::v1::Scorer& scorer) const {
  if (scorer.reward_model().empty()) return std::unique_ptr<RewardModel>();
  auto loaded = std::make_unique<RewardModel>();
  LOOM_ASSIGN_OR_RETURN(loaded->model, LoadInput(run_->inputs.reward_model(), "scorer.reward_model"));
  const TransformerConfig& config = loaded->model->config();
  loaded->scorer.model = loaded->model.get();
  LOOM_ASSIGN_OR_RETURN(loaded->scorer.reward_token, data::EndOfTurnToken(data::ChatTemplate::kChatML, *tokenizer_));
  loaded->scorer.seq_len = config.max_seq_len > 0 ? std::min(512, config.max_seq_len) : 512;
  return loaded;
}

absl::Status StageContext::MeasureMath(const Transformer& model, int64_t step, const std::string& suffix,
                                       ProgressReport* report, StageReporter& reporter) const {
  const loom::v1::EvalConfig& eval = stage().eval();
  if (!tokenizer_) return NoData("eval.math_accuracy");
  LOOM_ASSIGN_OR_RETURN(std::vector<data::Conversation> problems,
                        data::ReadConversations(SourceSplit(eval.math_source(), "heldout")));
  MathEvalOptions options;
  options.max_problems = eval.math_problems();
  if (eval.has_math_max_new_tokens()) options.max_new_tokens = eval.math_max_new_tokens();
  if (stage().sft().template_() == loom::v1::SftConfig::TEMPLATE_ALPACA) {
    options.chat_template = data::ChatTemplate::kAlpaca;
  }
  LOOM_ASSIGN_OR_RETURN(MathEvalResult r, EvaluateMathAccuracy(model, *tokenizer_, problems, options));
  const std::string& set = eval.math_source();
  report->eval_metrics[set + "/accuracy" + suffix] = r.accuracy();
  report->eval_metrics[set + "/no_answer" + suffix] = r.problems ? double(r.no_answer) / r.problems : 0.0;
  report->eval_metrics[set + "/problems" + suffix] = r.problems;
  reporter.Log(absl::StrFormat("eval step %d %s accuracy%s %.6f (%d of %d correct, %d without an answer)", step, set,
                               suffix, r.accuracy(), r.correct, r.problems, r.no_answer));
  for (const auto& sample : r.samples) {
    reporter.Log(absl::StrFormat("  %s -> %s [%s; reference %s]", sample.prompt, sample.answer, sample.verdict,
                                 sample.reference));
  }
  return absl::OkStatus();
}

int FirstSeqLen(const loom::v1::Stage& stage) {
  return stage.seq_len_schedule().empty() ? 256 : stage.seq_len_schedule(0).seq_len();
}

SamplingOptions SamplingFromProto(const loom::v1::SamplingConfig& config, uint64_t seed) {
  SamplingOptions o;
  o.temperature = static_cast<float>(config.temperature());
  o.top_p = static_cast<float>(config.top_p());
  o.top_k = config.top_k();
  o.max_new_tokens = config.max_new_tokens();
  o.seed = seed;
  return o;
}

}  // namespace loom::engine
