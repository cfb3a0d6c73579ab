// What a stage reads from other stages, in one place for the validator, the coordinator and the
// rank.
//
// A stage names the checkpoints and datasets it reads in several fields (`from`,
// `distill.teacher`, `dpo.reference`, the scorers' `reward_model`, `average.checkpoints`,
// `merge.inputs`, `merge.base`, `dataset.from_stage`). StageInputRefs lists them from the resolved
// stage; the validator checks each one, the coordinator turns each into a directory and writes it
// to the matching field of loom.v1.StageInputs (SetInput), and the rank checks that every one
// arrived (CheckInputsResolved). A new reference field is added here once, not in three places.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "loom/v1/plan.pb.h"

namespace loom {

// The index of the stage called `name` in plan.stages (the first, if validation has not yet
// refused a duplicate), or -1 when there is none.
int FindStage(const loom::v1::TrainingPlan& plan, std::string_view name);

// The field of loom.v1.StageInputs a reference's resolved path goes to.
enum class InputSlot {
  kFrom,         // from
  kTeacher,      // teacher
  kReference,    // reference
  kRewardModel,  // reward_model
  kCheckpoints,  // checkpoints[index]
  kMergeInputs,  // merge_inputs[index]
  kMergeBase,    // merge_base
  kDataset,      // dataset
};

// One reference a stage makes.
struct StageInputRef {
  // Field path under the stage, as plan errors write it: "from", "distill.teacher",
  // "dpo.reference", "rl.scorer.reward_model", "average.checkpoints[1]", "merge.inputs[0]",
  // "merge.base", "dataset.from_stage".
  std::string field;
  // The reference as written: a stage name, `stage@STEP` or a checkpoint path
  // (common/checkpoint_ref.h); for dataset.from_stage, the name of a rejection_sampling stage.
  std::string text;
  // Where its resolved path goes, and its position there for the two lists (-1 otherwise).
  InputSlot slot = InputSlot::kFrom;
  int index = -1;
};

// Every non-empty reference `stage` reads, in StageInputs field order. `stage` must be resolved
// (plan_resolve.h ResolveStage): a dpo or rl stage's `reference` defaults to its `from` there.
// Only fields the stage's kind reads are listed: `from` for every kind but merge, a dpo stage's
// scorer only when it is online, dataset.from_stage only for kinds that read a dataset.
// average.last_k names no stage of its own: it reads `from` (listed) and its checkpoints are
// found when the stage is scheduled.
std::vector<StageInputRef> StageInputRefs(const loom::v1::Stage& stage);

// Writes `path` to the field of `inputs` that `ref` goes to (growing a list as needed).
void SetInput(const StageInputRef& ref, const std::string& path, loom::v1::StageInputs* inputs);

// The path `inputs` holds for `ref`; empty when it has none.
std::string GetInput(const StageInputRef& ref, const loom::v1::StageInputs& inputs);

// OK when `inputs` holds a path for every reference of `stage` (StageInputRefs), and an average
// stage with `last_k` has exactly last_k checkpoints. FAILED_PRECONDITION otherwise, naming the
// stage and the field, e.g. "stage 'kd': input distill.teacher ('big') was not resolved to a
// checkpoint". For the rank, before it reads anything.
absl::Status CheckInputsResolved(const loom::v1::Stage& stage, const loom::v1::StageInputs& inputs);

}  // namespace loom
