// `repeat` blocks: a plan writes Llama 3.1's rounds (reward model -> rejection sampling -> SFT ->
// DPO, R times) once, and this expands them into plain stages before anything else reads the plan
// (ParsePlanText, and the coordinator for plans that arrive unexpanded). Rules in plan.proto
// (RepeatBlock); expanded stages are named `<name>.r<round>` and carry `round`.
#pragma once

#include <cstdint>
#include <vector>

#include "common/plan_error.h"
#include "loom/v1/plan.pb.h"

namespace loom {

// The most rounds one block may run.
inline constexpr int kMaxRepeatTimes = 100;
// The most stages a plan may have after expansion: counted (rounds x stages per block) before
// anything is expanded, so a small plan cannot make the reader build millions of stages.
inline constexpr int64_t kMaxExpandedStages = 10000;

// Replaces every stage that holds a `repeat` block by its rounds. Errors name the block's field
// (e.g. "stages[3].repeat.times"); on error the plan is left as it was. A plan without blocks is
// unchanged.
std::vector<PlanError> ExpandRepeats(loom::v1::TrainingPlan* plan);

}  // namespace loom
