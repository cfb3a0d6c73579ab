// The rules of the kind-specific blocks of a stage, and of which kinds run under which layouts
// (see plan_validator.h).
#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_ref.h"
#include "common/plan_resolve.h"
#include "common/plan_validation.h"
#include "common/plan_validator.h"
#include "common/proto_names.h"
#include "common/stage_inputs.h"

namespace loom::internal {

using loom::v1::ModelConfig;
using loom::v1::Stage;
using loom::v1::StageKind;

void Validator::CheckSampling(const loom::v1::SamplingConfig& c, const std::string& path) {
  if (!(c.temperature() >= 0 && c.temperature() <= 100)) {
    Error(path + ".temperature", absl::StrCat(c.temperature(), " is not in [0, 100]"), "0 is greedy");
  }
  if (!(c.top_p() > 0 && c.top_p() <= 1))
    Error(path + ".top_p", absl::StrCat(c.top_p(), " is not in (0, 1]"));
  if (c.top_k() < 0) Error(path + ".top_k", absl::StrCat(c.top_k(), " is negative"), "0 = no limit");
  if (c.max_new_tokens() < 1 || c.max_new_tokens() > 65536) {
    Error(path + ".max_new_tokens", absl::StrCat(c.max_new_tokens(), " is not in [1, 65536]"));
  }
}

// The reward model's reference itself: CheckInputRefs.
void Validator::CheckScorer(const loom::v1::Scorer& c, const std::string& path) {
  if (c.verifier() == loom::v1::Scorer::VERIFIER_UNSPECIFIED && c.reward_model().empty()) {
    Error(path, "is missing", "score samples with a verifier (verifier: math) or a reward_model");
  } else if (c.verifier() != loom::v1::Scorer::VERIFIER_UNSPECIFIED && !c.reward_model().empty()) {
    Error(path, "sets both verifier and reward_model", "use one");
  }
}

void Validator::CheckUnit(const std::string& path, double value, bool open_low, const char* hint) {
  const bool ok = std::isfinite(value) && (open_low ? value > 0 : value >= 0) && value <= 1;
  if (!ok) Error(path, absl::StrCat(value, open_low ? " is not in (0, 1]" : " is not in [0, 1]"), hint);
}

void Validator::CheckDistill(const Stage& s, const std::string& p, const ModelConfig* student) {
  const auto& d = s.distill();
  const std::string dp = p + ".distill";
  if (d.teacher().empty()) {  // the teacher named: CheckInputRefs
    Error(dp + ".teacher", "is missing",
          "name the teacher: an earlier stage that trained it, or a checkpoint path");
  }
  if (!(d.temperature() > 0 && d.temperature() <= 100)) {
    Error(dp + ".temperature", absl::StrCat(d.temperature(), " is not in (0, 100]"), "e.g. 1.0");
  }
  if (d.top_k() < 0 ||
      (student != nullptr && student->vocab_size() > 0 && d.top_k() >= student->vocab_size())) {
    Error(dp + ".top_k", absl::StrCat(d.top_k(), " is not in [0, vocab_size)"),
          "0 uses the full distribution");
  }
  CheckUnit(dp + ".teacher_weight", d.teacher_weight(), false, "AFM uses 0.9");
  CheckUnit(dp + ".lm_loss_weight", d.lm_loss_weight(), false);
}

void Validator::CheckDpo(const Stage& s, const std::string& p) {
  const auto& d = s.dpo();
  const std::string dp = p + ".dpo";
  if (d.reference().empty()) {  // the reference named: CheckInputRefs
    Error(dp + ".reference", "is missing",
          "a dpo stage needs a frozen reference model: set dpo.reference, or from (the default)");
  }
  if (!(d.beta() > 0 && d.beta() <= 100))
    Error(dp + ".beta", absl::StrCat(d.beta(), " is not in (0, 100]"), "e.g. 0.1");
  if (!(d.label_smoothing() >= 0 && d.label_smoothing() < 0.5)) {
    Error(dp + ".label_smoothing", absl::StrCat(d.label_smoothing(), " is not in [0, 0.5)"));
  }
  if (d.online()) {
    if (d.samples_per_prompt() < 2 || d.samples_per_prompt() > 1024) {
      Error(dp + ".samples_per_prompt", absl::StrCat(d.samples_per_prompt(), " is not in [2, 1024]"),
            "online DPO picks chosen and rejected among at least 2 samples");
    }
    CheckSampling(d.sampling(), dp + ".sampling");
    CheckScorer(d.scorer(), dp + ".scorer");
  }
}

void Validator::CheckWeights(const std::string& path, const google::protobuf::RepeatedField<double>& weights,
                             int expected, const char* what) {
  if (weights.empty()) return;
  if (weights.size() != expected) {
    Error(path, absl::StrCat("has ", weights.size(), " weights for ", expected, " ", what),
          "give one weight per entry, in the same order");
    return;
  }
  double sum = 0;
  for (int k = 0; k < weights.size(); ++k) {
    if (!std::isfinite(weights.Get(k)) || weights.Get(k) < 0) {
      Error(IndexPath(path, k), absl::StrCat(weights.Get(k), " is negative"));
    } else {
      sum += weights.Get(k);
    }
  }
  if (!(sum > 0)) Error(path, "weights sum to 0");
}

void Validator::CheckAverage(int i, const Stage& s, const std::string& p) {
  const auto& a = s.average();
  const std::string ap = p + ".average";
  const bool has_list = a.checkpoints_size() > 0;
  if (!has_list && !a.has_last_k()) {
    Error(ap, "names no checkpoints",
          "list average.checkpoints, or set average.last_k to average the last K checkpoints of `from`");
    return;
  }
  if (has_list && a.has_last_k()) {
    Error(ap + ".last_k", "is set together with checkpoints", "use one of the two");
    return;
  }
  int count = a.checkpoints_size();  // the listed checkpoints themselves: CheckInputRefs
  if (!has_list) {
    count = a.last_k();
    if (a.last_k() < 1) {
      Error(ap + ".last_k", absl::StrCat(a.last_k(), " must be at least 1"));
    } else if (s.from().empty()) {
      Error(ap + ".last_k", "needs from: the stage whose last checkpoints are averaged");
    } else if (absl::StatusOr<CheckpointRef> ref = ParseCheckpointRef(s.from());
               ref.ok() && ref->kind == CheckpointRef::Kind::kStage) {
      if (const int j = FindStage(plan_, ref->stage); j >= 0 && j < i) {
        const Stage& source = resolved_[j];
        const int keep = source.checkpoint().keep_last();
        // keep_last counts the final checkpoint (the newest): older ones are deleted from disk.
        if (keep > 0 && a.last_k() > keep) {
          Error(ap + ".last_k",
                absl::StrCat(a.last_k(), " is more than stage '", ref->stage,
                             "' keeps (checkpoint.keep_last: ", keep, ", its final checkpoint included)"),
                absl::StrCat("raise keep_last of '", ref->stage, "' or lower last_k"));
        }
      }
    } else if (ref.ok()) {
      Error(ap + ".last_k", "needs from to name a stage, not a path");
    }
  }
  if (a.method() == loom::v1::AverageConfig::METHOD_WEIGHTED && a.weights_size() == 0) {
    Error(ap + ".weights", "is missing", "method weighted needs one weight per checkpoint");
  } else if (a.method() != loom::v1::AverageConfig::METHOD_WEIGHTED && a.weights_size() > 0) {
    Error(ap + ".weights", absl::StrCat("is not read by method ", EnumName(a.method())),
          "set method: weighted, or remove the weights");
  } else {
    CheckWeights(ap + ".weights", a.weights(), count, "checkpoints");
  }
  if (a.method() == loom::v1::AverageConfig::METHOD_EMA && !(a.ema_beta() > 0 && a.ema_beta() < 1)) {
    Error(ap + ".ema_beta", absl::StrCat(a.ema_beta(), " is not in (0, 1)"), "e.g. 0.9");
  }
}

// The inputs and the base named: CheckInputRefs.
void Validator::CheckMerge(const Stage& s, const std::string& p) {
  const auto& m = s.merge();
  const std::string mp = p + ".merge";
  using M = loom::v1::MergeConfig;
  if (m.method() == M::METHOD_UNSPECIFIED) {
    Error(mp + ".method", "is missing", absl::StrCat("one of: ", EnumChoices(M::Method_descriptor())));
  }
  if (m.inputs_size() < 2) {
    Error(mp + ".inputs",
          absl::StrCat("has ", m.inputs_size(), m.inputs_size() == 1 ? " model" : " models",
                       "; a merge needs at least 2"),
          "list the models to merge: stage names or checkpoint paths");
  }
  if (m.method() == M::METHOD_SLERP && m.inputs_size() != 2) {
    Error(mp + ".inputs", absl::StrCat("has ", m.inputs_size(), " models; slerp interpolates exactly 2"));
  }
  CheckWeights(mp + ".weights", m.weights(), m.inputs_size(), "inputs");
  const bool needs_base =
      m.method() == M::METHOD_TASK_ARITHMETIC || m.method() == M::METHOD_TIES || m.method() == M::METHOD_DARE;
  if (needs_base && m.base().empty()) {
    Error(mp + ".base", "is missing",
          absl::StrCat(EnumName(m.method()),
                       " works on task vectors (input - base): name the model the inputs "
                       "were fine-tuned from"));
  } else if (!m.base().empty() && !needs_base) {
    Error(mp + ".base", absl::StrCat("is not read by method ", EnumName(m.method())));
  }
  if (!std::isfinite(m.lambda()) || std::abs(m.lambda()) > 100) {
    Error(mp + ".lambda", absl::StrCat(m.lambda(), " is not in [-100, 100]"));
  }
  if (m.method() == M::METHOD_SLERP) CheckUnit(mp + ".t", m.t(), false);
  if (m.method() == M::METHOD_TIES || m.method() == M::METHOD_DARE) {
    CheckUnit(mp + ".density", m.density(), true, "the fraction of task-vector entries kept");
  }
}

void Validator::CheckRejectionSampling(const Stage& s, const std::string& p) {
  const auto& r = s.rejection_sampling();
  const std::string rp = p + ".rejection_sampling";
  if (r.samples_per_prompt() < 1 || r.samples_per_prompt() > 1024) {
    Error(rp + ".samples_per_prompt", absl::StrCat(r.samples_per_prompt(), " is not in [1, 1024]"));
  }
  if (r.max_prompts() < 0)
    Error(rp + ".max_prompts", absl::StrCat(r.max_prompts(), " is negative"), "0 = all");
  CheckSampling(r.sampling(), rp + ".sampling");
  CheckScorer(r.scorer(), rp + ".scorer");
  if (r.keep() == loom::v1::RejectionSamplingConfig::KEEP_ALL_CORRECT &&
      r.scorer().verifier() == loom::v1::Scorer::VERIFIER_UNSPECIFIED) {
    Error(rp + ".keep", "all_correct needs a verifier", "a reward model scores, it does not say correct");
  }
}

void Validator::CheckRl(const Stage& s, const std::string& p) {
  const auto& r = s.rl();
  const std::string rp = p + ".rl";
  if (r.samples_per_prompt() < 2 || r.samples_per_prompt() > 1024) {
    Error(rp + ".samples_per_prompt", absl::StrCat(r.samples_per_prompt(), " is not in [2, 1024]"),
          "the leave-one-out baseline needs at least 2 samples per prompt");
  }
  if (!(r.kl_coef() >= 0 && r.kl_coef() <= 100))
    Error(rp + ".kl_coef", absl::StrCat(r.kl_coef(), " is not in [0, 100]"));
  CheckSampling(r.sampling(), rp + ".sampling");
  CheckScorer(r.scorer(), rp + ".scorer");
  if (r.reference().empty()) {  // the reference named: CheckInputRefs
    Error(rp + ".reference", "is missing", "set rl.reference, or from (the default)");
  }
  // A step samples whole prompts, samples_per_prompt completions each, on every data-parallel
  // rank: wherever a batch entry and a seq_len entry apply together, the batch's sequences must
  // split that way (the rl source refuses the step otherwise).
  const auto& par = s.parallel();
  if (r.samples_per_prompt() < 2 || par.dp() < 1 || par.micro_batch_size() < 1) return;
  const int64_t group = int64_t{r.samples_per_prompt()} * par.dp();
  const auto& ramp = s.batch_ramp();
  const auto& lens = s.seq_len_schedule();
  for (int bi = 0; bi < ramp.size(); ++bi) {
    const int64_t b_end = bi + 1 < ramp.size() ? ramp[bi + 1].at_tokens() : kMaxTokens;
    for (int si = 0; si < lens.size(); ++si) {
      const int64_t s_end = si + 1 < lens.size() ? lens[si + 1].at_tokens() : kMaxTokens;
      if (std::max(ramp[bi].at_tokens(), lens[si].at_tokens()) >= std::min(b_end, s_end)) continue;
      const int64_t batch = ramp[bi].global_batch_tokens(), seq = lens[si].seq_len();
      // Only batches that split into whole micro-batches (CheckSchedules reports the others).
      if (seq < 2 || batch <= 0 || batch % (seq * par.micro_batch_size() * par.dp()) != 0) continue;
      if ((batch / seq) % group == 0) continue;
      Error(FieldPath(IndexPath(p + ".batch_ramp", bi), "global_batch_tokens"),
            absl::StrCat(batch, " is ", batch / seq, " sequences of ", seq, " tokens (seq_len from ",
                         IndexPath("seq_len_schedule", si),
                         "), not a multiple of rl.samples_per_prompt x dp = ", r.samples_per_prompt(), " x ",
                         par.dp(), " = ", group),
            "an rl step samples whole prompts, samples_per_prompt completions each, on every data-parallel "
            "rank");
      break;  // one error per batch entry
    }
  }
}

// Which kinds run under which layouts, and what a kind needs of its micro-batches and schedules:
// the worker refuses these when the stage starts; validation says so at submit.
void Validator::CheckKindLayout(const Stage& s, const std::string& p, StageKind kind) {
  const auto& par = s.parallel();
  const std::string pp = p + ".parallel";
  // Kinds that need the whole model on each rank.
  const char* whole = nullptr;
  switch (kind) {
    case loom::v1::STAGE_KIND_DPO:
      whole = "its loss reads whole-vocabulary log-probabilities";
      break;
    case loom::v1::STAGE_KIND_REWARD_MODEL:
      whole = "its loss reads whole-vocabulary logits";
      break;
    case loom::v1::STAGE_KIND_RL:
      whole = "its loss reads whole-vocabulary log-probabilities";
      break;
    case loom::v1::STAGE_KIND_DISTILL:
      whole = "the teacher runs whole beside the student";
      break;
    case loom::v1::STAGE_KIND_REJECTION_SAMPLING:
      whole = "each rank samples from the whole model";
      break;
    default:
      break;
  }
  if (whole != nullptr) {
    if (par.tp() > 1) {
      Error(pp + ".tp",
            absl::StrCat(par.tp(), ": ", AKind(kind), " stage does not run with tensor parallelism (", whole,
                         ")"),
            "use tp: 1 and pp: 1 for it");
    }
    if (par.pp() > 1) {
      Error(pp + ".pp",
            absl::StrCat(par.pp(), ": ", AKind(kind), " stage does not run with pipeline parallelism (",
                         whole, ")"),
            "use tp: 1 and pp: 1 for it");
    }
  }
  if (IsTraining(kind) && par.zero1() && (par.tp() > 1 || par.pp() > 1)) {
    Error(pp + ".zero1",
          absl::StrCat("does not run with tp ", par.tp(), " and pp ", par.pp(),
                       ": ZeRO-1 shards the optimizer state of the whole model across data-parallel ranks"),
          "use tp: 1 and pp: 1 for it, or zero1: false");
  }
  const bool pairs = kind == loom::v1::STAGE_KIND_DPO || kind == loom::v1::STAGE_KIND_REWARD_MODEL;
  if (pairs && par.micro_batch_size() >= 1 && par.micro_batch_size() % 2 != 0) {
    Error(pp + ".micro_batch_size",
          absl::StrCat(par.micro_batch_size(), " is odd: ", AKind(kind),
                       " stage needs an even micro_batch_size (a pair's two rows share a micro-batch)"),
          absl::StrCat("use an even micro_batch_size, e.g. ", par.micro_batch_size() + 1));
  }
  const bool offline_pairs =
      kind == loom::v1::STAGE_KIND_REWARD_MODEL || (kind == loom::v1::STAGE_KIND_DPO && !s.dpo().online());
  if (offline_pairs && s.seq_len_schedule_size() > 1) {
    Error(p + ".seq_len_schedule",
          absl::StrCat("has ", s.seq_len_schedule_size(), " entries; ",
                       kind == loom::v1::STAGE_KIND_DPO ? "an offline dpo" : "a reward_model",
                       " stage trains at one seq_len (its pairs are cut to it once)"),
          "give seq_len_schedule one entry, e.g. [{at_tokens: 0, seq_len: 256}]");
  }
}

}  // namespace loom::internal
