// reward_model stages: Bradley–Terry on a prepared source's preference pairs, the LM head's
// end-of-turn row as the scalar head (training/reward_model_objective.h); held-out pair accuracy
// measured with the evaluations.
#include "common/status_macros.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"
#include "worker/engine/training/reward_model_objective.h"

namespace loom::engine::runners {
namespace {

class RewardModelRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    TrainingSetup setup;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PreferenceBatchSource> pairs,
                          OpenPreferencePairs(context, /*with_reference=*/false, &setup));
    LOOM_ASSIGN_OR_RETURN(setup.reward_token, data::EndOfTurnToken(data::ChatTemplate::kChatML, context.tokenizer()));
    setup.objective = std::make_shared<RewardModelObjective>(setup.reward_token, run.stage.reward_model().margin());
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> RewardModel() { return std::make_unique<RewardModelRunner>(); }

}  // namespace loom::engine::runners
