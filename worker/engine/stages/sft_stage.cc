// sft stages: language modelling on chats rendered with the stage's template, targets on the
// assistant's turns only (sources/chat_source.h). Chats are a prepared source's train split or a
// rejection_sampling stage's dataset (dataset.from_stage).
#include "common/status_macros.h"
#include "worker/engine/sources/chat_source.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"

namespace loom::engine::runners {
namespace {

class SftRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ChatBatchSource> chats,
                          ChatBatchSource::Open(run.stage, context.DatasetPath(), context.tokenizer(),
                                                run.stage.seed()));
    TrainingSetup setup;
    setup.data = chats.get();
    setup.schedule_tokens = chats->tokens_per_epoch() * chats->epochs();
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Sft() { return std::make_unique<SftRunner>(); }

}  // namespace loom::engine::runners
