// rl stages (RLOO): the policy samples K answers per prompt each step (sources/rl_source.h), the
// math verifier or a reward model scores them, the KL to the frozen reference shapes the rewards,
// and every row trains with its leave-one-out advantage (training/policy_gradient_objective.h).
#include "common/status_macros.h"
#include "worker/engine/sources/rl_source.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"
#include "worker/engine/training/policy_gradient_objective.h"

namespace loom::engine::runners {
namespace {

class RlRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    const loom::v1::Stage& stage = run.stage;
    const loom::v1::RlConfig& rl = stage.rl();
    RlSourceOptions options;
    options.path = context.DatasetPath();
    options.seed = stage.seed();
    options.epochs = stage.dataset().epochs();
    options.samples_per_prompt = rl.samples_per_prompt();
    options.sampling = SamplingFromProto(rl.sampling(), stage.seed());
    options.kl_coef = rl.kl_coef();
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<StageContext::RewardModel> reward_model,
                          context.LoadRewardModel(rl.scorer()));
    if (reward_model) options.reward_model = &reward_model->scorer;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<RlBatchSource> source, RlBatchSource::Open(options, context.tokenizer()));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> reference,
                          context.LoadInput(run.inputs.reference(), "rl.reference"));
    TrainingSetup setup;
    setup.data = source.get();
    setup.objective = std::make_shared<PolicyGradientObjective>();
    setup.schedule_tokens = source->prompts() * options.samples_per_prompt * FirstSeqLen(stage) * options.epochs;
    setup.on_trainer = [&](Trainer& trainer) { source->SetModels(&trainer.model(), reference.get()); };
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Rl() { return std::make_unique<RlRunner>(); }

}  // namespace loom::engine::runners
