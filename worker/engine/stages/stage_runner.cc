#include "worker/engine/stages/stage_runner.h"

#include "absl/strings/str_cat.h"
#include "common/plan_resolve.h"
#include "common/proto_names.h"
#include "kernels/cpu/parallel.h"
#include "worker/engine/stages/runners.h"

namespace loom::engine {

std::unique_ptr<StageRunner> RunnerFor(loom::v1::StageKind kind) {
  using K = loom::v1::StageKind;
  switch (kind) {
    case K::STAGE_KIND_PRETRAIN:
    case K::STAGE_KIND_CONTINUED_PRETRAIN:
    case K::STAGE_KIND_CONTEXT_EXTENSION:
    case K::STAGE_KIND_ANNEAL:
      return runners::Pretrain();
    case K::STAGE_KIND_SFT:
      return runners::Sft();
    case K::STAGE_KIND_DISTILL:
      return runners::Distill();
    case K::STAGE_KIND_DPO:
      return runners::Dpo();
    case K::STAGE_KIND_REWARD_MODEL:
      return runners::RewardModel();
    case K::STAGE_KIND_RL:
      return runners::Rl();
    case K::STAGE_KIND_REJECTION_SAMPLING:
      return runners::RejectionSampling();
    case K::STAGE_KIND_AVERAGE:
    case K::STAGE_KIND_MERGE:
      return runners::Merge();
    case K::STAGE_KIND_EVAL:
      return runners::Eval();
    default:
      return nullptr;
  }
}

absl::Status RunStage(const StageRun& run, StageReporter& reporter) {
  std::unique_ptr<StageRunner> runner = RunnerFor(run.stage.kind());
  if (!runner) {
    return absl::InvalidArgumentError(
        absl::StrCat("stage '", run.stage.name(), "': kind ", EnumName(run.stage.kind()), " has no runner"));
  }
  if (run.token_source != nullptr && !TrainsOnTokenStream(run.stage.kind())) {
    return absl::InvalidArgumentError(absl::StrCat("stage '", run.stage.name(), "': a token stream stands in for the data ",
                                                   "mix of a pre-training stage only; ", EnumName(run.stage.kind()),
                                                   " stages read prepared data (give its directory)"));
  }
  kernels::cpu::SetNumThreads(std::max(1, run.threads));
  return runner->Run(run, reporter);
}

}  // namespace loom::engine
