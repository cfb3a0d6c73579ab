// Turns what a person wrote into what a job runs: a stage with the plan's `defaults` and then
// Loom's built-in defaults applied, and the model config a stage trains. The coordinator hands
// resolved stages to workers, so the engine never has to know about defaults.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "loom/v1/plan.pb.h"

namespace loom {

// The sources of Loom's default corpus (`loom data corpus`); the names a plan may use when it
// lists no `data.sources` of its own.
inline constexpr std::array<std::string_view, 6> kDefaultSources = {"english", "multilingual", "code",
                                                                    "math",    "sft_math",     "prefs_math"};

// plan.data.sources, or kDefaultSources when the plan lists none.
std::vector<std::string> KnownSources(const loom::v1::TrainingPlan& plan);

// Overlays `top` on `base`: every field set in `top` wins; messages merge field by field; a
// non-empty list or map in `top` replaces the one in `base`.
void OverlayStage(const loom::v1::Stage& top, loom::v1::Stage* base);

// plan.defaults overlaid by plan.stages[index], then ApplyStageDefaults.
loom::v1::Stage ResolveStage(const loom::v1::TrainingPlan& plan, int index);

// The default seed of a stage: a stable mix of the plan seed and the stage name.
uint64_t StageSeed(uint64_t plan_seed, std::string_view stage_name);

// Fills every unset field that has a built-in default (documented in plan.proto) and replaces
// *_UNSPECIFIED enums by their default value.
void ApplyStageDefaults(loom::v1::Stage* stage);
void ApplyModelDefaults(loom::v1::ModelConfig* model);

// The model a stage trains (plan.model or plan.models[name]) with defaults applied; nullptr-like
// empty config when the name is unknown (validation reports that).
loom::v1::ModelConfig ResolveModel(const loom::v1::TrainingPlan& plan, const std::string& name);

uint64_t PlanSeed(const loom::v1::TrainingPlan& plan);    // default 1234

// What a stage kind does, for validation, scheduling and display.
bool TrainsOnTokenStream(loom::v1::StageKind kind);  // pretrain-like: tokens + data mix
bool TrainsOnDataset(loom::v1::StageKind kind);      // sft, dpo, reward_model, rl
bool IsTraining(loom::v1::StageKind kind);           // either of the two above
bool ProducesModel(loom::v1::StageKind kind);        // a checkpoint other stages may start from

}  // namespace loom
