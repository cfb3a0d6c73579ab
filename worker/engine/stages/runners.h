// Internal to stages/: the runner of each stage kind (stage_runner.h's table), one per file.
#pragma once

#include <memory>

#include "worker/engine/stages/stage_runner.h"

namespace loom::engine::runners {

std::unique_ptr<StageRunner> Pretrain();
std::unique_ptr<StageRunner> Sft();
std::unique_ptr<StageRunner> Distill();
std::unique_ptr<StageRunner> Dpo();
std::unique_ptr<StageRunner> RewardModel();
std::unique_ptr<StageRunner> Rl();
std::unique_ptr<StageRunner> RejectionSampling();
std::unique_ptr<StageRunner> Merge();
std::unique_ptr<StageRunner> Eval();

}  // namespace loom::engine::runners
