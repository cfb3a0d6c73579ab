// Plan validation: every rule a plan must satisfy before the coordinator accepts it, checked at
// once so that a person sees all problems in one pass. The client (`loom validate`, `loom
// submit`) and the coordinator run the same code.
//
// Each error names its field path (`stages[1].batch_ramp[2].at_tokens`), says what is wrong with
// the value it found, and gives a hint. Stages are checked after the plan's defaults and the
// built-in defaults are applied (plan_resolve.h), so an error may be reported at a stage's path
// for a value it inherited from `defaults`.
#pragma once

#include <cstdint>
#include <vector>

#include "common/plan_error.h"
#include "loom/v1/plan.pb.h"

namespace loom {

// Size limits, so that a hostile or broken plan cannot exhaust the coordinator's memory or CPU.
inline constexpr int kMaxPlanBytes = 1 << 20;  // plan file / serialised plan
inline constexpr int kMaxStages = 256;
inline constexpr int kMaxListEntries = 1024;             // any list (schedules, inputs, layers, ...)
inline constexpr int kMaxMapEntries = 64;                // any map (mix weights, models)
inline constexpr int kMaxStringBytes = 4096;             // any text field (paths, descriptions)
inline constexpr int kMaxRanks = 4096;                   // dp * tp * pp of one stage
inline constexpr int64_t kMaxTokens = int64_t{1} << 50;  // about 1.1e15 tokens

// Every problem of `plan`, in field order; empty when the plan is valid.
std::vector<PlanError> ValidatePlan(const loom::v1::TrainingPlan& plan);

}  // namespace loom
