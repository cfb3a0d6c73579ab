// pretrain, continued_pretrain, context_extension and anneal stages: language modelling on the
// stage's data mix over the prepared shards (sources/sampler_source.h), or on a token stream a
// caller hands in (`loom train-local --text`).
#include "common/status_macros.h"
#include "worker/engine/sources/sampler_source.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"

namespace loom::engine::runners {
namespace {

class PretrainRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    TrainingSetup setup;
    std::unique_ptr<BatchSource> mix;
    setup.data = run.token_source;
    if (setup.data == nullptr) {
      LOOM_ASSIGN_OR_RETURN(mix, SamplerBatchSource::Open(run.stage, run.data.dir(), context.tokenizer().hash(),
                                                          context.tokenizer().vocab_size(), run.stage.seed()));
      setup.data = mix.get();
    }
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Pretrain() { return std::make_unique<PretrainRunner>(); }

}  // namespace loom::engine::runners
