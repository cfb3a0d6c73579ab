#include "common/plan_repeat.h"

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_ref.h"

namespace loom {
namespace {

using loom::v1::Stage;

// Every field of a stage that may name another stage (`name` or `name@STEP`; or a path).
std::vector<std::string*> ReferenceFields(Stage* s) {
  std::vector<std::string*> f = {s->mutable_from(),
                                 s->mutable_distill()->mutable_teacher(),
                                 s->mutable_dpo()->mutable_reference(),
                                 s->mutable_dpo()->mutable_scorer()->mutable_reward_model(),
                                 s->mutable_rl()->mutable_reference(),
                                 s->mutable_rl()->mutable_scorer()->mutable_reward_model(),
                                 s->mutable_rejection_sampling()->mutable_scorer()->mutable_reward_model(),
                                 s->mutable_dataset()->mutable_from_stage(),
                                 s->mutable_merge()->mutable_base()};
  for (std::string& c : *s->mutable_average()->mutable_checkpoints()) f.push_back(&c);
  for (std::string& c : *s->mutable_merge()->mutable_inputs()) f.push_back(&c);
  return f;
}

// The stage a reference names, or "" for paths and empty fields.
std::string ReferencedStage(const std::string& ref) {
  if (ref.empty()) return "";
  absl::StatusOr<CheckpointRef> parsed = ParseCheckpointRef(ref);
  if (!parsed.ok() || parsed->kind == CheckpointRef::Kind::kPath) return "";
  return parsed->stage;
}

// Rewrites the stage part of every reference through `rename` (names not in it stay).
void RewriteStage(Stage* s, const std::map<std::string, std::string>& rename) {
  for (std::string* ref : ReferenceFields(s)) {
    const std::string stage = ReferencedStage(*ref);
    auto it = rename.find(stage);
    if (stage.empty() || it == rename.end()) continue;
    absl::StatusOr<CheckpointRef> parsed = ParseCheckpointRef(*ref);
    *ref = parsed->step >= 0 ? absl::StrCat(it->second, "@", parsed->step) : it->second;
  }
}

// Clears the kind-specific blocks a stage did not have, which RewriteStage's mutable_ calls created.
void ClearEmptyBlocks(Stage* s, const Stage& original) {
  if (!original.has_distill()) s->clear_distill();
  if (!original.has_dpo()) s->clear_dpo();
  if (!original.has_rl()) s->clear_rl();
  if (!original.has_rejection_sampling()) s->clear_rejection_sampling();
  if (!original.has_dataset()) s->clear_dataset();
  if (!original.has_average()) s->clear_average();
  if (!original.has_merge()) s->clear_merge();
}

}  // namespace

std::vector<PlanError> ExpandRepeats(loom::v1::TrainingPlan* plan) {
  std::vector<PlanError> errors;
  bool any = false;
  for (const Stage& s : plan->stages()) any |= s.has_repeat();
  if (!any) return errors;

  // Bound the cost before paying it: count the stages the expansion would make (int64, with each
  // block's times checked first, so the sum cannot overflow before it passes the limit).
  int64_t expanded = 0;
  for (int i = 0; i < plan->stages_size(); ++i) {
    const Stage& entry = plan->stages(i);
    const int64_t times = entry.has_repeat() ? entry.repeat().times() : 1;
    if (times < 1 || times > kMaxRepeatTimes) continue;  // reported below with its field path
    expanded += entry.has_repeat() ? times * entry.repeat().stages_size() : 1;
    if (expanded > kMaxExpandedStages) {
      const std::string p = entry.has_repeat() ? absl::StrCat("stages[", i, "].repeat") : absl::StrCat("stages[", i, "]");
      errors.push_back({p, absl::StrCat("expanding the plan's repeat blocks would make more than ",
                                        kMaxExpandedStages, " stages"),
                        "use fewer rounds (repeat.times) or fewer stages per round"});
      return errors;
    }
  }

  google::protobuf::RepeatedPtrField<Stage> out;
  for (int i = 0; i < plan->stages_size(); ++i) {
    const Stage& entry = plan->stages(i);
    if (!entry.has_repeat()) {
      *out.Add() = entry;
      continue;
    }
    const std::string p = absl::StrCat("stages[", i, "].repeat");
    const loom::v1::RepeatBlock& block = entry.repeat();
    if (block.times() < 1 || block.times() > kMaxRepeatTimes) {
      errors.push_back({p + ".times", absl::StrCat(block.times(), " is not in [1, ", kMaxRepeatTimes, "]"),
                        "rounds to run"});
      continue;
    }
    if (block.stages().empty()) {
      errors.push_back({p + ".stages", "is empty", "list the stages of one round"});
      continue;
    }
    std::map<std::string, int> position;  // block stage name -> index in the block
    for (int k = 0; k < block.stages_size(); ++k) {
      const Stage& s = block.stages(k);
      if (s.has_repeat()) {
        errors.push_back({absl::StrCat(p, ".stages[", k, "].repeat"), "repeat blocks do not nest", ""});
      }
      if (!position.emplace(s.name(), k).second) {
        errors.push_back({absl::StrCat(p, ".stages[", k, "].name"),
                          absl::StrCat("'", s.name(), "' appears twice in the block"), ""});
      }
    }
    for (const auto& [name, stand_in] : block.initial()) {
      if (!position.contains(name)) {
        errors.push_back({absl::StrCat(p, ".initial[", name, "]"),
                          absl::StrCat("'", name, "' is not a stage of the block"),
                          "initial maps block stage names to what round 1 uses instead"});
      }
    }
    if (!errors.empty()) continue;
    for (int round = 1; round <= block.times(); ++round) {
      for (int k = 0; k < block.stages_size(); ++k) {
        const Stage& original = block.stages(k);
        Stage* s = out.Add();
        *s = original;
        s->set_name(absl::StrCat(original.name(), ".r", round));
        s->set_round(round);
        // Earlier in the block: this round; the same or later: the previous round (or initial).
        // Only the names this stage references are looked at, so a round costs O(stages), not
        // O(stages^2).
        std::map<std::string, std::string> rename;
        std::set<std::string> missing;  // round 1's references to a previous round without a stand-in
        for (std::string* ref : ReferenceFields(s)) {
          const std::string name = ReferencedStage(*ref);
          auto found = position.find(name);
          if (name.empty() || found == position.end()) continue;
          const int at = found->second;
          if (at < k) {
            rename[name] = absl::StrCat(name, ".r", round);
          } else if (round > 1) {
            rename[name] = absl::StrCat(name, ".r", round - 1);
          } else if (auto it = block.initial().find(name); it != block.initial().end()) {
            rename[name] = it->second;
          } else {
            missing.insert(name);
          }
        }
        for (std::string* ref : ReferenceFields(s)) {
          const std::string name = ReferencedStage(*ref);
          if (!missing.contains(name)) continue;
          errors.push_back({absl::StrCat(p, ".stages[", k, "]"),
                            absl::StrCat("'", original.name(), "' uses '", name,
                                         "' of the previous round, which round 1 does not have"),
                            absl::StrCat("add repeat.initial: {", name,
                                         ": <a stage before the block, or a checkpoint path>}")});
        }
        RewriteStage(s, rename);
        ClearEmptyBlocks(s, original);
      }
    }
  }
  if (!errors.empty()) return errors;
  *plan->mutable_stages() = std::move(out);
  return errors;
}

}  // namespace loom
