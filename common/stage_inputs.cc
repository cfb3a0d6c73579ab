#include "common/stage_inputs.h"

#include "absl/strings/str_cat.h"
#include "common/plan_resolve.h"
#include "common/strings.h"

namespace loom {
namespace {

using loom::v1::Stage;
using loom::v1::StageInputs;

bool ReadsDataset(loom::v1::StageKind kind) {
  return TrainsOnDataset(kind) || kind == loom::v1::STAGE_KIND_REJECTION_SAMPLING;
}

}  // namespace

int FindStage(const loom::v1::TrainingPlan& plan, std::string_view name) {
  for (int i = 0; i < plan.stages_size(); ++i) {
    if (plan.stages(i).name() == name) return i;
  }
  return -1;
}

std::vector<StageInputRef> StageInputRefs(const Stage& s) {
  std::vector<StageInputRef> refs;
  auto add = [&](std::string field, const std::string& text, InputSlot slot, int index = -1) {
    if (!text.empty()) refs.push_back({std::move(field), text, slot, index});
  };
  using K = loom::v1::StageKind;
  if (s.kind() != K::STAGE_KIND_MERGE) add("from", s.from(), InputSlot::kFrom);
  switch (s.kind()) {
    case K::STAGE_KIND_DISTILL:
      add("distill.teacher", s.distill().teacher(), InputSlot::kTeacher);
      break;
    case K::STAGE_KIND_DPO:
      add("dpo.reference", s.dpo().reference(), InputSlot::kReference);
      if (s.dpo().online())
        add("dpo.scorer.reward_model", s.dpo().scorer().reward_model(), InputSlot::kRewardModel);
      break;
    case K::STAGE_KIND_RL:
      add("rl.reference", s.rl().reference(), InputSlot::kReference);
      add("rl.scorer.reward_model", s.rl().scorer().reward_model(), InputSlot::kRewardModel);
      break;
    case K::STAGE_KIND_REJECTION_SAMPLING:
      add("rejection_sampling.scorer.reward_model", s.rejection_sampling().scorer().reward_model(),
          InputSlot::kRewardModel);
      break;
    case K::STAGE_KIND_AVERAGE:
      for (int i = 0; i < s.average().checkpoints_size(); ++i) {
        add(absl::StrCat("average.checkpoints[", i, "]"), s.average().checkpoints(i), InputSlot::kCheckpoints,
            i);
      }
      break;
    case K::STAGE_KIND_MERGE:
      for (int i = 0; i < s.merge().inputs_size(); ++i) {
        add(absl::StrCat("merge.inputs[", i, "]"), s.merge().inputs(i), InputSlot::kMergeInputs, i);
      }
      add("merge.base", s.merge().base(), InputSlot::kMergeBase);
      break;
    default:
      break;
  }
  if (ReadsDataset(s.kind())) add("dataset.from_stage", s.dataset().from_stage(), InputSlot::kDataset);
  return refs;
}

void SetInput(const StageInputRef& ref, const std::string& path, StageInputs* inputs) {
  auto set_at = [&](google::protobuf::RepeatedPtrField<std::string>* list) {
    while (list->size() <= ref.index) list->Add();
    *list->Mutable(ref.index) = path;
  };
  switch (ref.slot) {
    case InputSlot::kFrom:
      inputs->set_from(path);
      break;
    case InputSlot::kTeacher:
      inputs->set_teacher(path);
      break;
    case InputSlot::kReference:
      inputs->set_reference(path);
      break;
    case InputSlot::kRewardModel:
      inputs->set_reward_model(path);
      break;
    case InputSlot::kCheckpoints:
      set_at(inputs->mutable_checkpoints());
      break;
    case InputSlot::kMergeInputs:
      set_at(inputs->mutable_merge_inputs());
      break;
    case InputSlot::kMergeBase:
      inputs->set_merge_base(path);
      break;
    case InputSlot::kDataset:
      inputs->set_dataset(path);
      break;
  }
}

std::string GetInput(const StageInputRef& ref, const StageInputs& inputs) {
  auto at = [&](const google::protobuf::RepeatedPtrField<std::string>& list) {
    return ref.index >= 0 && ref.index < list.size() ? list.Get(ref.index) : std::string();
  };
  switch (ref.slot) {
    case InputSlot::kFrom:
      return inputs.from();
    case InputSlot::kTeacher:
      return inputs.teacher();
    case InputSlot::kReference:
      return inputs.reference();
    case InputSlot::kRewardModel:
      return inputs.reward_model();
    case InputSlot::kCheckpoints:
      return at(inputs.checkpoints());
    case InputSlot::kMergeInputs:
      return at(inputs.merge_inputs());
    case InputSlot::kMergeBase:
      return inputs.merge_base();
    case InputSlot::kDataset:
      return inputs.dataset();
  }
  return "";
}

absl::Status CheckInputsResolved(const Stage& stage, const StageInputs& inputs) {
  for (const StageInputRef& ref : StageInputRefs(stage)) {
    if (!GetInput(ref, inputs).empty()) continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "stage '", stage.name(), "': input ", ref.field, " ('", ref.text, "') was not resolved to ",
        ref.slot == InputSlot::kDataset ? "a dataset" : "a checkpoint"));
  }
  // The lists hold exactly what the stage averages or merges: nothing more.
  auto count = [&](const char* field, int want, const google::protobuf::RepeatedPtrField<std::string>& got) {
    if (got.size() == want) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("stage '", stage.name(), "': ", field, " needs ", want,
                                                      " checkpoints; ", got.size(), " were resolved"));
  };
  if (stage.kind() == loom::v1::STAGE_KIND_AVERAGE) {
    if (stage.average().has_last_k()) {
      if (absl::Status s = count("average.last_k", stage.average().last_k(), inputs.checkpoints()); !s.ok()) {
        return s;
      }
      for (int i = 0; i < inputs.checkpoints_size(); ++i) {
        if (inputs.checkpoints(i).empty()) {
          return absl::FailedPreconditionError(
              absl::StrCat("stage '", stage.name(), "': checkpoint ", i,
                           " of average.last_k was not resolved to a checkpoint"));
        }
      }
    } else {
      return count("average.checkpoints", stage.average().checkpoints_size(), inputs.checkpoints());
    }
  }
  if (stage.kind() == loom::v1::STAGE_KIND_MERGE) {
    return count("merge.inputs", stage.merge().inputs_size(), inputs.merge_inputs());
  }
  return absl::OkStatus();
}

}  // namespace loom
