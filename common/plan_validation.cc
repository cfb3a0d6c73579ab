#include "common/plan_validation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint_ref.h"
#include "common/plan_resolve.h"
#include "common/plan_validator.h"
#include "common/proto_names.h"
#include "common/stage_inputs.h"

namespace loom::internal {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using loom::v1::ModelConfig;
using loom::v1::Stage;
using loom::v1::StageKind;
using loom::v1::TrainingPlan;

constexpr char kNameHint[] =
    "use lower-case letters, digits, '_', '.' and '-', starting with a letter or digit, at most "
    "64 characters";

}  // namespace

std::string KindName(StageKind kind) { return EnumName(kind); }

std::string AKind(StageKind kind) {
  const std::string name = KindName(kind);
  const bool vowel_sound =
      std::string_view("aeiou").find(name[0]) != std::string_view::npos || name == "sft" || name == "rl";
  return absl::StrCat(vowel_sound ? "an " : "a ", name);
}

std::vector<PlanError> Validator::Run() {
  CheckSizes(plan_, "");
  if (!errors_.empty()) return errors_;  // too large: do not look further
  sources_ = KnownSources(plan_);
  CheckPlanFields();
  for (int i = 0; i < plan_.stages_size(); ++i) resolved_.push_back(ResolveStage(plan_, i));
  for (int i = 0; i < plan_.stages_size(); ++i) CheckStage(i);
  return errors_;
}

void Validator::Error(std::string path, std::string message, std::string hint) {
  errors_.push_back(PlanError{std::move(path), std::move(message), std::move(hint)});
}

// ---- sizes ---------------------------------------------------------------------------------
void Validator::CheckSizes(const Message& message, const std::string& path) {
  const auto* refl = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const std::string field_path = FieldPath(path, field->name());
    if (field->is_repeated()) {
      const int size = refl->FieldSize(message, field);
      const int limit = field->is_map()                               ? kMaxMapEntries
                        : (path.empty() && field->name() == "stages") ? kMaxStages
                                                                      : kMaxListEntries;
      if (size > limit) {
        Error(field_path, absl::StrCat("has ", size, " entries; the limit is ", limit),
              "split the plan, or shorten the list");
        continue;
      }
      if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int i = 0; i < size; ++i) {
          CheckSizes(refl->GetRepeatedMessage(message, field, i), IndexPath(field_path, i));
        }
      } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
        for (int i = 0; i < size; ++i) {
          CheckString(refl->GetRepeatedString(message, field, i), IndexPath(field_path, i));
        }
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      CheckSizes(refl->GetMessage(message, field), field_path);
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING) {
      CheckString(refl->GetString(message, field), field_path);
    }
  }
}

void Validator::CheckString(const std::string& value, const std::string& path) {
  if (value.size() > static_cast<size_t>(kMaxStringBytes)) {
    Error(path, absl::StrCat("is ", value.size(), " bytes long; the limit is ", kMaxStringBytes));
  }
}

// ---- plan-level fields ---------------------------------------------------------------------
void Validator::CheckPlanFields() {
  if (plan_.name().empty()) {
    Error("name", "is missing", "name the plan, e.g. name: llama3_tiny");
  } else if (!IsValidName(plan_.name())) {
    Error("name", absl::StrCat("'", plan_.name(), "' is not a valid name"), kNameHint);
  }
  if (!plan_.has_model()) {
    Error("model", "is missing",
          "describe the model: layers, d_model, heads, kv_heads, ffn_size, vocab_size");
  } else {
    CheckModel(plan_.model(), "model");
  }
  for (const auto& [name, model] : plan_.models()) {
    const std::string path = KeyPath("models", name);
    if (!IsValidName(name)) Error(path, absl::StrCat("'", name, "' is not a valid model name"), kNameHint);
    CheckModel(model, path);
  }
  std::set<std::string> seen;
  for (int i = 0; i < plan_.data().sources_size(); ++i) {
    const std::string& source = plan_.data().sources(i);
    const std::string path = IndexPath("data.sources", i);
    if (!IsValidName(source))
      Error(path, absl::StrCat("'", source, "' is not a valid source name"), kNameHint);
    if (!seen.insert(source).second) Error(path, absl::StrCat("'", source, "' is listed twice"));
  }
  const Stage& d = plan_.defaults();
  if (!d.name().empty()) Error("defaults.name", "cannot be set in defaults", "names belong to stages");
  if (d.kind() != loom::v1::STAGE_KIND_UNSPECIFIED) {
    Error("defaults.kind", "cannot be set in defaults", "give each stage its kind");
  }
  if (!d.from().empty()) Error("defaults.from", "cannot be set in defaults", "give each stage its own from");
  if (plan_.stages_size() == 0) {
    Error("stages", "is empty", "a plan needs at least one stage, e.g. a pretrain stage");
  }
  if (plan_.has_max_attempts() && (plan_.max_attempts() < 1 || plan_.max_attempts() > 100)) {
    Error("max_attempts", absl::StrCat(plan_.max_attempts(), " is not in [1, 100]"));
  }
  const loom::v1::RetryPolicy& r = plan_.retry();
  if (r.has_max_retries() && (r.max_retries() < 0 || r.max_retries() > 10000)) {
    Error("retry.max_retries", absl::StrCat(r.max_retries(), " is not in [0, 10000]"),
          "retries of cluster faults allowed within retry.window_seconds, e.g. 10");
  }
  if (r.has_window_seconds() && !(r.window_seconds() >= 1 && r.window_seconds() <= 365 * 86400.0)) {
    Error("retry.window_seconds", absl::StrCat(r.window_seconds(), " is not in [1, 31536000]"),
          "the window retries are counted in, e.g. 3600 (an hour)");
  }
  if (r.has_initial_backoff_seconds() && !(r.initial_backoff_seconds() >= 0 && r.initial_backoff_seconds() <= 86400)) {
    Error("retry.initial_backoff_seconds", absl::StrCat(r.initial_backoff_seconds(), " is not in [0, 86400]"));
  }
  if (r.has_max_backoff_seconds() && !(r.max_backoff_seconds() >= 0 && r.max_backoff_seconds() <= 86400)) {
    Error("retry.max_backoff_seconds", absl::StrCat(r.max_backoff_seconds(), " is not in [0, 86400]"));
  } else if (r.has_max_backoff_seconds() && r.max_backoff_seconds() < r.initial_backoff_seconds()) {
    Error("retry.max_backoff_seconds",
          absl::StrCat(r.max_backoff_seconds(), " is less than retry.initial_backoff_seconds (",
                       r.initial_backoff_seconds(), ")"));
  }
  const loom::v1::HangPolicy& hang = plan_.hang();
  if (hang.has_step_time_factor() && !(hang.step_time_factor() >= 2 && hang.step_time_factor() <= 1000)) {
    Error("hang.step_time_factor", absl::StrCat(hang.step_time_factor(), " is not in [2, 1000]"),
          "how many median step times without a step make a job hung, e.g. 10");
  }
  if (hang.has_min_seconds() && !(hang.min_seconds() >= 1 && hang.min_seconds() <= 7 * 86400.0)) {
    Error("hang.min_seconds", absl::StrCat(hang.min_seconds(), " is not in [1, 604800]"),
          "the shortest time without a step that makes a job hung, e.g. 300 (it covers model loading)");
  }
  if (plan_.priority() < -1000 || plan_.priority() > 1000) {
    Error("priority", absl::StrCat(plan_.priority(), " is not in [-1000, 1000]"));
  }
}

void Validator::CheckModel(const ModelConfig& m, const std::string& path) {
  auto in_range = [&](const char* field, int64_t value, int64_t lo, int64_t hi, const char* hint) {
    if (value < lo || value > hi) {
      Error(FieldPath(path, field),
            value == 0 && lo > 0 ? std::string("is missing")
                                 : absl::StrCat(value, " is not in [", lo, ", ", hi, "]"),
            hint);
      return false;
    }
    return true;
  };
  const bool layers_ok = in_range("layers", m.layers(), 1, 1024, "number of transformer blocks, e.g. 4");
  const bool heads_ok = in_range("heads", m.heads(), 1, 1024, "attention heads, e.g. 8");
  const bool d_ok = in_range("d_model", m.d_model(), 1, 65536, "width of the residual stream, e.g. 256");
  in_range("ffn_size", m.ffn_size(), 1, 1 << 20, "hidden size of the SwiGLU MLP, e.g. 688");
  in_range("vocab_size", m.vocab_size(), 2, 1 << 22, "must equal the tokenizer's vocabulary, e.g. 8000");
  if (heads_ok && d_ok) {
    if (m.d_model() % m.heads() != 0) {
      Error(FieldPath(path, "d_model"),
            absl::StrCat(m.d_model(), " is not a multiple of heads (", m.heads(), ")"),
            "the head size is d_model / heads; pick d_model = heads x head size");
    } else if ((m.d_model() / m.heads()) % 2 != 0) {
      Error(FieldPath(path, "d_model"),
            absl::StrCat("gives an odd head size (", m.d_model() / m.heads(), ")"),
            "rotary embeddings rotate pairs of dimensions: the head size must be even");
    }
  }
  if (m.kv_heads() < 0) {
    Error(FieldPath(path, "kv_heads"), absl::StrCat(m.kv_heads(), " is negative"));
  } else if (heads_ok && m.kv_heads() > 0) {
    if (m.kv_heads() > m.heads() || m.heads() % m.kv_heads() != 0) {
      Error(FieldPath(path, "kv_heads"),
            absl::StrCat("heads (", m.heads(), ") is not a multiple of kv_heads (", m.kv_heads(), ")"),
            "grouped-query attention shares each key/value head among heads / kv_heads query heads");
    }
  }
  if (m.has_rope_theta() && !(m.rope_theta() > 0)) {
    Error(FieldPath(path, "rope_theta"), absl::StrCat(m.rope_theta(), " must be positive"),
          "the RoPE base, e.g. 10000 or 500000");
  }
  CheckRopeScaling(m.rope_scaling(), FieldPath(path, "rope_scaling"));
  if (m.has_norm_eps() && !(m.norm_eps() > 0 && m.norm_eps() < 1)) {
    Error(FieldPath(path, "norm_eps"), absl::StrCat(m.norm_eps(), " is not in (0, 1)"), "e.g. 1e-5");
  }
  if (m.has_init_std() && !(m.init_std() > 0 && m.init_std() < 10)) {
    Error(FieldPath(path, "init_std"), absl::StrCat(m.init_std(), " is not in (0, 10)"), "e.g. 0.02");
  }
  if (m.max_seq_len() < 0 || m.max_seq_len() > (1 << 22)) {
    Error(FieldPath(path, "max_seq_len"), absl::StrCat(m.max_seq_len(), " is not in [0, 4194304]"));
  }
  // Sliding-window attention.
  const bool has_layers = m.sliding_window_layers_size() > 0;
  if (m.sliding_window() < 0) {
    Error(FieldPath(path, "sliding_window"), absl::StrCat(m.sliding_window(), " is negative"));
  }
  if (m.sliding_window_period() < 0) {
    Error(FieldPath(path, "sliding_window_period"), absl::StrCat(m.sliding_window_period(), " is negative"));
  }
  if (has_layers && m.sliding_window_period() > 0) {
    Error(FieldPath(path, "sliding_window_period"), "is set together with sliding_window_layers",
          "use one: the list of local layers, or the period (2 = every other layer)");
  }
  if ((has_layers || m.sliding_window_period() > 0) && m.sliding_window() <= 0) {
    Error(FieldPath(path, "sliding_window"), "is missing: local layers are listed but have no window",
          "set the window width in tokens, e.g. sliding_window: 128");
  }
  std::set<int> seen;
  for (int i = 0; i < m.sliding_window_layers_size(); ++i) {
    const int layer = m.sliding_window_layers(i);
    const std::string lp = IndexPath(FieldPath(path, "sliding_window_layers"), i);
    if (layers_ok && (layer < 0 || layer >= m.layers())) {
      Error(lp, absl::StrCat(layer, " is not a layer of this model (0 to ", m.layers() - 1, ")"));
    } else if (!seen.insert(layer).second) {
      Error(lp, absl::StrCat("layer ", layer, " is listed twice"));
    }
  }
}

void Validator::CheckRopeScaling(const loom::v1::RopeScaling& s, const std::string& path) {
  const bool scaled =
      s.type() == loom::v1::RopeScaling::TYPE_LINEAR || s.type() == loom::v1::RopeScaling::TYPE_NTK;
  if (scaled && !(s.factor() > 1)) {
    Error(FieldPath(path, "factor"), absl::StrCat(s.factor(), " must be greater than 1"),
          "the ratio of the new context to the old, e.g. 8 for 4K -> 32K");
  } else if (!scaled && s.factor() != 0) {
    Error(FieldPath(path, "factor"), "is set but type is not linear or ntk",
          "set rope_scaling.type: linear (or ntk)");
  }
}

// ---- stages --------------------------------------------------------------------------------
void Validator::CheckStage(int i) {
  const Stage& raw = plan_.stages(i);
  const Stage& s = resolved_[i];
  const std::string p = IndexPath("stages", i);
  const StageKind kind = s.kind();

  if (raw.name().empty()) {
    Error(p + ".name", "is missing", "every stage needs a unique name, e.g. core");
  } else if (!IsValidName(raw.name())) {
    Error(p + ".name", absl::StrCat("'", raw.name(), "' is not a valid name"), kNameHint);
  } else if (const int first = FindStage(plan_, raw.name()); first != i) {
    Error(p + ".name", absl::StrCat("'", raw.name(), "' is already the name of stages[", first, "]"),
          "stage names must be unique");
  }
  if (kind == loom::v1::STAGE_KIND_UNSPECIFIED) {
    Error(p + ".kind", "is missing", absl::StrCat("one of: ", EnumChoices(loom::v1::StageKind_descriptor())));
    return;  // every other rule depends on the kind
  }

  bool model_ok = true;
  if (!s.model().empty() && !plan_.models().contains(s.model())) {
    std::vector<std::string> names;
    for (const auto& [name, unused] : plan_.models()) names.push_back(name);
    std::string hint = DidYouMean(s.model(), names);
    if (hint.empty()) {
      hint = names.empty() ? "this plan defines no `models`; leave model empty to train plan.model"
                           : absl::StrCat("models of this plan: ", absl::StrJoin(names, ", "));
    }
    Error(p + ".model", absl::StrCat("'", s.model(), "' is not one of the plan's models"), hint);
    model_ok = false;
  }
  const ModelConfig model = ResolveModel(plan_, s.model());

  CheckIrrelevantFields(raw, p, kind);
  CheckFrom(s, raw, p);
  CheckInputRefs(i, s, p, model_ok ? &model : nullptr);

  if (IsTraining(kind) || kind == loom::v1::STAGE_KIND_REJECTION_SAMPLING) {
    CheckParallel(s.parallel(), p + ".parallel", model_ok ? &model : nullptr);
    CheckKindLayout(s, p, kind);
  }
  if (IsTraining(kind)) {
    CheckTokens(s, p, kind);
    CheckOptimizer(s, p);
    CheckSchedules(s, p, model_ok ? &model : nullptr);
  }
  if (TrainsOnTokenStream(kind)) CheckMix(s, p);
  if (TrainsOnDataset(kind) || kind == loom::v1::STAGE_KIND_REJECTION_SAMPLING) CheckDataset(s, p);
  CheckCheckpointPolicy(s, p);
  CheckEval(s, p, kind);
  if (s.has_rope()) {
    if (s.rope().has_theta() && !(s.rope().theta() > 0)) {
      Error(p + ".rope.theta", absl::StrCat(s.rope().theta(), " must be positive"),
            "the new RoPE base, e.g. 1000000");
    }
    CheckRopeScaling(s.rope().scaling(), p + ".rope.scaling");
  }

  switch (kind) {
    case loom::v1::STAGE_KIND_DISTILL:
      CheckDistill(s, p, model_ok ? &model : nullptr);
      break;
    case loom::v1::STAGE_KIND_DPO:
      CheckDpo(s, p);
      break;
    case loom::v1::STAGE_KIND_AVERAGE:
      CheckAverage(i, s, p);
      break;
    case loom::v1::STAGE_KIND_MERGE:
      CheckMerge(s, p);
      break;
    case loom::v1::STAGE_KIND_REJECTION_SAMPLING:
      CheckRejectionSampling(s, p);
      break;
    case loom::v1::STAGE_KIND_REWARD_MODEL:
      if (!std::isfinite(s.reward_model().margin()) || s.reward_model().margin() < 0) {
        Error(p + ".reward_model.margin", absl::StrCat(s.reward_model().margin(), " must be >= 0"));
      }
      break;
    case loom::v1::STAGE_KIND_RL:
      CheckRl(s, p);
      break;
    default:
      break;
  }
}

// Blocks and fields that only some kinds read: written on another kind they are a mistake.
// Checked on the stage as written (not on inherited defaults).
void Validator::CheckIrrelevantFields(const Stage& raw, const std::string& p, StageKind kind) {
  struct Block {
    const char* field;
    bool present;
    StageKind kind;
  };
  const Block blocks[] = {
      {"distill", raw.has_distill(), loom::v1::STAGE_KIND_DISTILL},
      {"dpo", raw.has_dpo(), loom::v1::STAGE_KIND_DPO},
      {"average", raw.has_average(), loom::v1::STAGE_KIND_AVERAGE},
      {"merge", raw.has_merge(), loom::v1::STAGE_KIND_MERGE},
      {"rejection_sampling", raw.has_rejection_sampling(), loom::v1::STAGE_KIND_REJECTION_SAMPLING},
      {"sft", raw.has_sft(), loom::v1::STAGE_KIND_SFT},
      {"reward_model", raw.has_reward_model(), loom::v1::STAGE_KIND_REWARD_MODEL},
      {"rl", raw.has_rl(), loom::v1::STAGE_KIND_RL},
  };
  for (const Block& b : blocks) {
    if (b.present && b.kind != kind) {
      Error(FieldPath(p, b.field),
            absl::StrCat("is only read by ", KindName(b.kind), " stages; this stage is ", KindName(kind)),
            "remove the block, or change the stage's kind");
    }
  }
  if (raw.data_mix_size() > 0 && !TrainsOnTokenStream(kind)) {
    Error(p + ".data_mix", absl::StrCat("is not read by ", KindName(kind), " stages"),
          TrainsOnDataset(kind) ? "this kind reads `dataset`" : "remove it");
  }
  if (raw.has_dataset() && !TrainsOnDataset(kind) && kind != loom::v1::STAGE_KIND_REJECTION_SAMPLING) {
    Error(p + ".dataset", absl::StrCat("is not read by ", KindName(kind), " stages"),
          TrainsOnTokenStream(kind) ? "this kind reads `data_mix`" : "remove it");
  }
  if (raw.has_tokens() && !IsTraining(kind)) {
    Error(p + ".tokens", absl::StrCat(AKind(kind), " stage trains on no tokens"), "remove tokens");
  }
}

// Validates a checkpoint reference; returns the stage index it names, or -1 (a path, or bad).
int Validator::CheckRef(int i, const std::string& path, const std::string& text, Need need) {
  absl::StatusOr<CheckpointRef> ref = ParseCheckpointRef(text);
  if (!ref.ok()) {
    Error(path, std::string(ref.status().message()));
    return -1;
  }
  if (ref->kind == CheckpointRef::Kind::kPath) return -1;
  const int j = FindStage(plan_, ref->stage);
  if (j < 0) {
    std::vector<std::string> earlier;
    for (int k = 0; k < i; ++k) earlier.push_back(plan_.stages(k).name());
    std::string hint = DidYouMean(ref->stage, earlier);
    if (hint.empty()) {
      hint = earlier.empty() ? "this is the first stage; use a checkpoint path (containing '/')"
                             : absl::StrCat("earlier stages: ", absl::StrJoin(earlier, ", "));
    }
    Error(path, absl::StrCat("'", ref->stage, "' is not a stage of this plan"), hint);
    return -1;
  }
  if (j >= i) {
    Error(path,
          j == i ? std::string("a stage cannot start from itself")
                 : absl::StrCat("'", ref->stage, "' is stages[", j, "], which comes after this stage"),
          "a stage can only use the results of earlier stages");
    return -1;
  }
  const StageKind target = resolved_[j].kind();
  if (need == Need::kModel && !ProducesModel(target)) {
    Error(path,
          absl::StrCat("'", ref->stage, "' is ", AKind(target), " stage, which produces ",
                       target == loom::v1::STAGE_KIND_REWARD_MODEL ? "a reward model"
                       : target == loom::v1::STAGE_KIND_EVAL       ? "only measurements"
                                                                   : "a dataset",
                       ", not a language model"),
          "name the stage that trained the model");
    return -1;
  }
  if (need == Need::kRewardModel && target != loom::v1::STAGE_KIND_REWARD_MODEL) {
    Error(path, absl::StrCat("'", ref->stage, "' is ", AKind(target), " stage, not a reward_model stage"));
    return -1;
  }
  if (ref->step >= 0 && !IsTraining(target)) {
    Error(path,
          absl::StrCat("'", ref->stage, "' is ", AKind(target),
                       " stage: it writes only a final checkpoint, not one per step"),
          absl::StrCat("write just '", ref->stage, "'"));
    return -1;
  }
  return j;
}

// A model reference must also be a checkpoint of the same architecture as the stage's model.
void Validator::CheckSameModel(int j, const Stage& s, const std::string& path) {
  if (j < 0 || resolved_[j].model() == s.model()) return;
  auto label = [](const std::string& m) {
    return m.empty() ? std::string("the plan's model") : absl::StrCat("model '", m, "'");
  };
  Error(path,
        absl::StrCat("stage '", plan_.stages(j).name(), "' trains ", label(resolved_[j].model()),
                     ", but this stage trains ", label(s.model())),
        "a stage can only load checkpoints of the model it trains");
}

void Validator::CheckFrom(const Stage& s, const Stage& raw, const std::string& p) {
  const StageKind kind = s.kind();
  const bool needs_from =
      kind == loom::v1::STAGE_KIND_CONTINUED_PRETRAIN || kind == loom::v1::STAGE_KIND_CONTEXT_EXTENSION ||
      kind == loom::v1::STAGE_KIND_ANNEAL || kind == loom::v1::STAGE_KIND_SFT ||
      kind == loom::v1::STAGE_KIND_DPO || kind == loom::v1::STAGE_KIND_RL ||
      kind == loom::v1::STAGE_KIND_REJECTION_SAMPLING || kind == loom::v1::STAGE_KIND_EVAL;
  if (kind == loom::v1::STAGE_KIND_MERGE && !raw.from().empty()) {
    Error(p + ".from", "is not read by merge stages", "list the models in merge.inputs");
    return;
  }
  if (s.from().empty() && needs_from) {
    Error(p + ".from", "is missing",
          absl::StrCat(AKind(kind),
                       " stage starts from a trained model: name an earlier stage or a checkpoint path"));
  }
}

// Every checkpoint and dataset the stage reads (common/stage_inputs.h): an earlier stage that
// produces what the field needs, or a path. Models loaded beside or into the stage's own must be
// of its architecture; a teacher may be another model, of the same vocabulary.
void Validator::CheckInputRefs(int i, const Stage& s, const std::string& p, const ModelConfig* model) {
  for (const StageInputRef& ref : StageInputRefs(s)) {
    const std::string path = FieldPath(p, ref.field);
    switch (ref.slot) {
      case InputSlot::kDataset:
        // With a source as well, CheckDataset reports the pair.
        if (s.dataset().source().empty()) CheckDatasetRef(i, s, path, ref.text);
        break;
      case InputSlot::kRewardModel:
        CheckRef(i, path, ref.text, Need::kRewardModel);
        break;
      case InputSlot::kTeacher: {
        const int j = CheckRef(i, path, ref.text, Need::kModel);
        if (j < 0 || model == nullptr) break;
        const ModelConfig teacher = ResolveModel(plan_, resolved_[j].model());
        if (teacher.vocab_size() > 0 && teacher.vocab_size() != model->vocab_size()) {
          Error(path,
                absl::StrCat("the teacher's vocab_size (", teacher.vocab_size(),
                             ") differs from the student's (", model->vocab_size(), ")"),
                "distillation compares distributions over one tokenizer's vocabulary");
        }
        break;
      }
      default:  // from, references, average and merge inputs
        CheckSameModel(CheckRef(i, path, ref.text, Need::kModel), s, path);
        break;
    }
  }
}

void Validator::CheckParallel(const loom::v1::ParallelConfig& par, const std::string& path,
                              const ModelConfig* model) {
  bool ok = true;
  for (auto [name, value] :
       {std::pair<const char*, int>{"dp", par.dp()}, {"tp", par.tp()}, {"pp", par.pp()}}) {
    if (value < 1 || value > kMaxRanks) {
      Error(FieldPath(path, name), absl::StrCat(value, " is not in [1, ", kMaxRanks, "]"));
      ok = false;
    }
  }
  if (par.micro_batch_size() < 1 || par.micro_batch_size() > 65536) {
    Error(FieldPath(path, "micro_batch_size"), absl::StrCat(par.micro_batch_size(), " is not in [1, 65536]"),
          "sequences per micro-batch on each data-parallel rank");
  }
  if (!ok) return;
  if (int64_t{par.dp()} * par.tp() * par.pp() > kMaxRanks) {
    Error(path, absl::StrCat("dp x tp x pp = ", int64_t{par.dp()} * par.tp() * par.pp(),
                             " ranks; the limit is ", kMaxRanks));
  }
  if (model == nullptr || model->heads() < 1 || model->layers() < 1) return;
  const int kv = model->kv_heads() > 0 ? model->kv_heads() : model->heads();
  if (model->heads() % par.tp() != 0) {
    Error(FieldPath(path, "tp"), absl::StrCat(par.tp(), " does not divide heads (", model->heads(), ")"),
          "tensor parallelism splits the attention heads evenly across tp ranks");
  } else if (kv % par.tp() != 0) {
    Error(FieldPath(path, "tp"), absl::StrCat(par.tp(), " does not divide kv_heads (", kv, ")"),
          "tensor parallelism splits the key/value heads evenly across tp ranks");
  } else if (model->ffn_size() > 0 && model->ffn_size() % par.tp() != 0) {
    Error(FieldPath(path, "tp"), absl::StrCat(par.tp(), " does not divide ffn_size (", model->ffn_size(), ")"),
          "tensor parallelism splits the MLP's hidden units evenly across tp ranks");
  } else if (model->vocab_size() > 0 && model->vocab_size() % par.tp() != 0) {
    Error(FieldPath(path, "tp"), absl::StrCat(par.tp(), " does not divide vocab_size (", model->vocab_size(), ")"),
          "the embedding and the output head are split by vocabulary rows across tp ranks: pad vocab_size "
          "to a multiple of tp");
  }
  if (par.pp() > model->layers()) {
    Error(FieldPath(path, "pp"),
          absl::StrCat(par.pp(), " is more than the model's layers (", model->layers(), ")"),
          "each pipeline stage needs at least one layer");
  }
}

void Validator::CheckTokens(const Stage& s, const std::string& p, StageKind kind) {
  if (!s.has_tokens()) {
    if (TrainsOnTokenStream(kind)) {
      Error(p + ".tokens", "is missing", "the stage's token budget, e.g. tokens: 2M");
    }
    return;
  }
  if (s.tokens() <= 0 || s.tokens() > kMaxTokens) {
    Error(p + ".tokens", absl::StrCat(s.tokens(), " is not in [1, ", kMaxTokens, "]"),
          "the stage's token budget, e.g. tokens: 2M");
  }
}

void Validator::CheckOptimizer(const Stage& s, const std::string& p) {
  const auto& o = s.optimizer();
  const std::string op = p + ".optimizer";
  if (!o.has_lr()) {
    Error(op + ".lr", "is missing", "the peak learning rate, e.g. lr: 3e-4 (here or in defaults.optimizer)");
  } else if (!(o.lr() > 0 && o.lr() <= 1)) {
    Error(op + ".lr", absl::StrCat(o.lr(), " is not in (0, 1]"), "e.g. 3e-4");
  }
  if (!(o.beta1() >= 0 && o.beta1() < 1)) Error(op + ".beta1", absl::StrCat(o.beta1(), " is not in [0, 1)"));
  if (!(o.beta2() >= 0 && o.beta2() < 1)) Error(op + ".beta2", absl::StrCat(o.beta2(), " is not in [0, 1)"));
  if (!(o.eps() > 0 && o.eps() < 1))
    Error(op + ".eps", absl::StrCat(o.eps(), " is not in (0, 1)"), "e.g. 1e-8");
  if (!(o.weight_decay() >= 0 && o.weight_decay() <= 10)) {
    Error(op + ".weight_decay", absl::StrCat(o.weight_decay(), " is not in [0, 10]"), "e.g. 0.1");
  }
  if (!(o.grad_clip() >= 0 && std::isfinite(o.grad_clip()))) {
    Error(op + ".grad_clip", absl::StrCat(o.grad_clip(), " must be >= 0"), "0 disables clipping; e.g. 1.0");
  }
  const auto& lr = s.lr_schedule();
  const std::string lp = p + ".lr_schedule";
  if (lr.warmup_tokens() < 0) {
    Error(lp + ".warmup_tokens", absl::StrCat(lr.warmup_tokens(), " is negative"));
  } else if (s.has_tokens() && s.tokens() > 0 && lr.warmup_tokens() > s.tokens()) {
    Error(lp + ".warmup_tokens",
          absl::StrCat(lr.warmup_tokens(), " is more than the stage's budget (tokens: ", s.tokens(), ")"),
          "warmup must end within the stage");
  }
  if (!(lr.min_lr_ratio() >= 0 && lr.min_lr_ratio() <= 1)) {
    Error(lp + ".min_lr_ratio", absl::StrCat(lr.min_lr_ratio(), " is not in [0, 1]"));
  }
  if (!(lr.decay_fraction() > 0 && lr.decay_fraction() <= 1)) {
    Error(lp + ".decay_fraction", absl::StrCat(lr.decay_fraction(), " is not in (0, 1]"));
  }
}

// Checks that a schedule starts at 0, increases strictly, and stays within the budget.
// `at` returns the at_tokens of entry k. Returns true when the points are usable.
bool Validator::CheckSchedulePoints(const std::string& path, int size, const std::function<int64_t(int)>& at,
                                    const Stage& s, const char* example) {
  if (size == 0) {
    Error(path, "is empty",
          absl::StrCat("give at least the entry at 0, e.g. ", example, " (here or in defaults)"));
    return false;
  }
  bool ok = true;
  for (int k = 0; k < size; ++k) {
    const std::string ep = FieldPath(IndexPath(path, k), "at_tokens");
    if (k == 0 && at(0) != 0) {
      Error(ep, absl::StrCat("the first entry must be at 0, not ", at(0)),
            "the schedule must say what holds from the start of the stage");
      ok = false;
    } else if (k > 0 && at(k) <= at(k - 1)) {
      Error(ep, absl::StrCat(at(k), " is not after the previous entry (", at(k - 1), ")"),
            "list the entries in increasing at_tokens order");
      ok = false;
    } else if (k > 0 && s.has_tokens() && s.tokens() > 0 && at(k) >= s.tokens()) {
      Error(ep, absl::StrCat(at(k), " is not before the end of the stage (tokens: ", s.tokens(), ")"),
            "this entry would never apply; remove it or raise the budget");
      ok = false;
    }
  }
  return ok;
}

void Validator::CheckSchedules(const Stage& s, const std::string& p, const ModelConfig* model) {
  const std::string bp = p + ".batch_ramp";
  const std::string sp = p + ".seq_len_schedule";
  bool batch_ok = CheckSchedulePoints(
      bp, s.batch_ramp_size(), [&](int k) { return s.batch_ramp(k).at_tokens(); }, s,
      "batch_ramp: [{at_tokens: 0, global_batch_tokens: 64Ki}]");
  for (int k = 0; k < s.batch_ramp_size(); ++k) {
    const int64_t b = s.batch_ramp(k).global_batch_tokens();
    if (b <= 0 || b > kMaxTokens) {
      Error(FieldPath(IndexPath(bp, k), "global_batch_tokens"),
            b == 0 ? std::string("is missing") : absl::StrCat(b, " is not positive"),
            "global batch size in tokens, e.g. 64Ki");
      batch_ok = false;
    }
  }
  bool seq_ok = CheckSchedulePoints(
      sp, s.seq_len_schedule_size(), [&](int k) { return s.seq_len_schedule(k).at_tokens(); }, s,
      "seq_len_schedule: [{at_tokens: 0, seq_len: 256}]");
  for (int k = 0; k < s.seq_len_schedule_size(); ++k) {
    const int len = s.seq_len_schedule(k).seq_len();
    const std::string ep = FieldPath(IndexPath(sp, k), "seq_len");
    if (len < 2 || len > (1 << 22)) {
      Error(ep, len == 0 ? std::string("is missing") : absl::StrCat(len, " is not in [2, 4194304]"),
            "tokens per training sequence, e.g. 256");
      seq_ok = false;
    } else if (model != nullptr && model->max_seq_len() > 0 && len > model->max_seq_len()) {
      Error(ep, absl::StrCat(len, " is longer than the model's max_seq_len (", model->max_seq_len(), ")"),
            "raise model.max_seq_len or shorten the sequences");
    }
  }
  if (!batch_ok || !seq_ok) return;
  const auto& par = s.parallel();
  if (par.dp() < 1 || par.micro_batch_size() < 1) return;
  // The global batch must split into whole micro-batches on every data-parallel rank at every
  // point of the stage: check each interval between consecutive schedule boundaries.
  std::set<int64_t> boundaries;
  for (const auto& e : s.batch_ramp()) boundaries.insert(e.at_tokens());
  for (const auto& e : s.seq_len_schedule()) boundaries.insert(e.at_tokens());
  std::set<int> reported;
  for (int64_t at : boundaries) {
    int bi = 0, si = 0;
    while (bi + 1 < s.batch_ramp_size() && s.batch_ramp(bi + 1).at_tokens() <= at) ++bi;
    while (si + 1 < s.seq_len_schedule_size() && s.seq_len_schedule(si + 1).at_tokens() <= at) ++si;
    const int64_t batch = s.batch_ramp(bi).global_batch_tokens();
    const int64_t seq = s.seq_len_schedule(si).seq_len();
    const int64_t unit = seq * par.micro_batch_size() * par.dp();
    if (batch % unit == 0 || reported.contains(bi)) continue;
    reported.insert(bi);
    const int64_t lower = batch / unit * unit;
    const std::string nearest = lower > 0 ? absl::StrCat(lower, " or ", lower + unit) : absl::StrCat(unit);
    Error(
        FieldPath(IndexPath(bp, bi), "global_batch_tokens"),
        absl::StrCat(batch, " is not a multiple of seq_len x micro_batch_size x dp = ", seq, " x ",
                     par.micro_batch_size(), " x ", par.dp(), " = ", unit, " (seq_len from ",
                     IndexPath("seq_len_schedule", si), ")"),
        absl::StrCat("the batch is split into whole micro-batches on every rank; nearest valid: ", nearest));
  }
}

void Validator::CheckSourceName(const std::string& path, const std::string& source) {
  if (std::find(sources_.begin(), sources_.end(), source) != sources_.end()) return;
  std::string hint = DidYouMean(source, sources_);
  if (hint.empty()) hint = absl::StrCat("known sources: ", absl::StrJoin(sources_, ", "));
  Error(path, absl::StrCat("'", source, "' is not a known source"), hint);
}

void Validator::CheckMix(const Stage& s, const std::string& p) {
  const std::string mp = p + ".data_mix";
  CheckSchedulePoints(
      mp, s.data_mix_size(), [&](int k) { return s.data_mix(k).at_tokens(); }, s,
      "data_mix: [{at_tokens: 0, weights: {english: 1}}]");
  for (int k = 0; k < s.data_mix_size(); ++k) {
    const auto& entry = s.data_mix(k);
    const std::string wp = FieldPath(IndexPath(mp, k), "weights");
    if (entry.weights().empty()) {
      Error(wp, "is empty", "give each source a weight, e.g. {english: 0.7, code: 0.3}");
      continue;
    }
    double sum = 0;
    // Sorted for a stable error order (protobuf maps iterate in no particular order).
    std::map<std::string, double> sorted(entry.weights().begin(), entry.weights().end());
    for (const auto& [source, weight] : sorted) {
      const std::string ep = KeyPath(wp, source);
      CheckSourceName(ep, source);
      if (!std::isfinite(weight) || weight < 0) {
        Error(ep, absl::StrCat(weight, " is negative"), "weights are relative shares, >= 0");
      } else {
        sum += weight;
      }
    }
    if (!(sum > 0)) Error(wp, "weights sum to 0", "at least one source needs a positive weight");
  }
}

void Validator::CheckDataset(const Stage& s, const std::string& p) {
  const auto& d = s.dataset();
  const std::string dp = p + ".dataset";
  // Online DPO and RL read their prompts from the dataset too.
  if (d.source().empty() == d.from_stage().empty()) {
    Error(dp, d.source().empty() ? std::string("is missing") : std::string("sets both source and from_stage"),
          "name one: dataset: {source: sft_math} or dataset: {from_stage: <a rejection_sampling stage>}");
    return;
  }
  if (d.epochs() < 1 || d.epochs() > 1000) {
    Error(dp + ".epochs", absl::StrCat(d.epochs(), " is not in [1, 1000]"), "passes over the dataset");
  }
  if (!d.source().empty()) CheckSourceName(dp + ".source", d.source());
  // from_stage: CheckInputRefs.
}

// dataset.from_stage: an earlier rejection_sampling stage, read by a kind that reads its chats.
void Validator::CheckDatasetRef(int i, const Stage& s, const std::string& path, const std::string& name) {
  const int j = FindStage(plan_, name);
  if (j < 0 || j >= i) {
    std::vector<std::string> producers;
    for (int k = 0; k < i; ++k) {
      if (resolved_[k].kind() == loom::v1::STAGE_KIND_REJECTION_SAMPLING)
        producers.push_back(plan_.stages(k).name());
    }
    Error(path, absl::StrCat("'", name, "' is not an earlier stage of this plan"),
          producers.empty()
              ? std::string("datasets come from earlier rejection_sampling stages")
              : absl::StrCat("earlier rejection_sampling stages: ", absl::StrJoin(producers, ", ")));
  } else if (resolved_[j].kind() != loom::v1::STAGE_KIND_REJECTION_SAMPLING) {
    Error(path,
          absl::StrCat("'", name, "' is ", AKind(resolved_[j].kind()), " stage, which produces no dataset"),
          "datasets come from rejection_sampling stages");
  } else if (s.kind() != loom::v1::STAGE_KIND_SFT) {
    // The chats a rejection_sampling stage keeps are SFT data: the other kinds read pairs or
    // prompts from a prepared source.
    const bool pairs = s.kind() == loom::v1::STAGE_KIND_REWARD_MODEL ||
                       (s.kind() == loom::v1::STAGE_KIND_DPO && !s.dpo().online());
    Error(path,
          absl::StrCat(AKind(s.kind()), " stage reads ", pairs ? "preference pairs" : "its prompts",
                       " from a prepared source, not from a rejection_sampling stage's dataset"),
          absl::StrCat("name the source instead: dataset: {source: ", pairs ? "prefs_math" : "sft_math",
                       "}; only sft stages read datasets of earlier stages"));
  }
}

void Validator::CheckCheckpointPolicy(const Stage& s, const std::string& p) {
  if (s.checkpoint().every_steps() < 0) {
    Error(p + ".checkpoint.every_steps", absl::StrCat(s.checkpoint().every_steps(), " is negative"),
          "0 writes only the final checkpoint");
  }
  if (s.checkpoint().keep_last() < 0) {
    Error(p + ".checkpoint.keep_last", absl::StrCat(s.checkpoint().keep_last(), " is negative"),
          "0 keeps all");
  }
}

void Validator::CheckEval(const Stage& s, const std::string& p, StageKind kind) {
  const auto& e = s.eval();
  if (e.every_steps() < 0) Error(p + ".eval.every_steps", absl::StrCat(e.every_steps(), " is negative"));
  if (e.max_tokens() <= 0) Error(p + ".eval.max_tokens", absl::StrCat(e.max_tokens(), " must be positive"));
  for (int k = 0; k < e.sets_size(); ++k) CheckSourceName(IndexPath(p + ".eval.sets", k), e.sets(k));
  if (e.math_problems() <= 0) {
    Error(p + ".eval.math_problems", absl::StrCat(e.math_problems(), " must be positive"));
  }
  if (e.math_max_new_tokens() < 1 || e.math_max_new_tokens() > 4096) {
    Error(p + ".eval.math_max_new_tokens", absl::StrCat(e.math_max_new_tokens(), " is not in [1, 4096]"),
          "the tokens an answer may take, e.g. 64");
  }
  if (e.math_accuracy()) CheckSourceName(p + ".eval.math_source", e.math_source());
  if (e.seq_len() < 2) Error(p + ".eval.seq_len", absl::StrCat(e.seq_len(), " must be at least 2"));
  if (kind == loom::v1::STAGE_KIND_EVAL && e.sets_size() == 0 && !e.math_accuracy()) {
    Error(p + ".eval", "measures nothing",
          "list eval.sets (held-out sources) or set eval.math_accuracy: true");
  }
}

}  // namespace loom::internal

namespace loom {

std::vector<PlanError> ValidatePlan(const loom::v1::TrainingPlan& plan) {
  return internal::Validator(plan).Run();
}

}  // namespace loom
