// distill stages: the student trains on the stage's data mix against the teacher's predictions
// (training/distillation_objective.h); the teacher is distill.teacher's checkpoint.
#include "common/status_macros.h"
#include "worker/engine/sources/sampler_source.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"
#include "worker/engine/training/distillation_objective.h"

namespace loom::engine::runners {
namespace {

class DistillRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<BatchSource> mix,
                          SamplerBatchSource::Open(run.stage, run.data.dir(), context.tokenizer().hash(),
                                                   context.tokenizer().vocab_size(), run.stage.seed()));
    if (run.inputs.teacher().empty()) {
      return StageError(run.stage, absl::StatusCode::kFailedPrecondition,
                        "distill.teacher was not resolved to a checkpoint");
    }
    TrainingSetup setup;
    setup.data = mix.get();
    LOOM_ASSIGN_OR_RETURN(setup.objective,
                          DistillationObjective::Load(run.inputs.teacher(), DistillOptionsFromProto(run.stage.distill())));
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Distill() { return std::make_unique<DistillRunner>(); }

}  // namespace loom::engine::runners
