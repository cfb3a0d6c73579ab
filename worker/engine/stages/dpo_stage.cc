// dpo stages. Offline: preference pairs of a prepared source, the frozen reference's
// log-probabilities computed once (split over the data-parallel ranks) and cached beside the
// stage's checkpoints, held-out preference accuracy measured with the evaluations. Online (Qwen
// 2): each step the policy samples answers to a prompt stream, the verifier or a reward model
// scores them, the best and worst make the pair, and the reference's log-probabilities are
// computed on the spot. Either way the loss is training/preference_objective.h's.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "worker/engine/sources/online_preference_source.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/training_stage.h"
#include "worker/engine/training/preference_objective.h"

namespace loom::engine::runners {
namespace {

class DpoRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    // The groups first: the ranks split the reference's work through the data-parallel group.
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    TrainingSetup setup;
    setup.objective = std::make_shared<PreferenceObjective>(DpoOptionsFromProto(run.stage.dpo()));
    return run.stage.dpo().online() ? Online(context, setup, reporter) : Offline(context, setup, reporter);
  }

 private:
  static absl::Status Offline(const StageContext& context, TrainingSetup& setup, StageReporter& reporter) {
    const StageRun& run = context.run();
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PreferenceBatchSource> pairs,
                          OpenPreferencePairs(context, /*with_reference=*/true, &setup));
    // The frozen reference runs once over the pairs; its values are kept with the stage's
    // checkpoints, so a later attempt reads them back.
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> reference,
                          context.LoadInput(run.inputs.reference(), "dpo.reference"));
    const absl::Time start = MonotonicNow();
    LOOM_RETURN_IF_ERROR(pairs->ComputeReference(
        *reference, run.inputs.reference(), setup.pairs_seq_len,
        run.checkpoint_dir.empty()
            ? std::string()  // no checkpoints, no cache
            : absl::StrCat(run.cache_dir.empty() ? run.checkpoint_dir : run.cache_dir, "/reference_logprobs.rank",
                           run.layout.dp_rank, ".bin"),
        context.groups().data));
    reporter.Log(absl::StrFormat(
        "reference log-probabilities of %d pairs %s in %.1f s (%d pairs longer than seq_len %d are cut)",
        pairs->pairs(), pairs->reference_from_cache() ? "read from the cache" : "computed",
        absl::ToDoubleSeconds(MonotonicNow() - start), pairs->truncated_pairs(), setup.pairs_seq_len));
    return RunTraining(context, setup, reporter);
  }

  static absl::Status Online(const StageContext& context, TrainingSetup& setup, StageReporter& reporter) {
    const StageRun& run = context.run();
    const loom::v1::Stage& stage = run.stage;
    const loom::v1::DpoConfig& dpo = stage.dpo();
    OnlinePreferenceOptions options;
    options.path = context.DatasetPath();
    options.seed = stage.seed();
    options.epochs = stage.dataset().epochs();
    options.samples_per_prompt = dpo.samples_per_prompt();
    options.sampling = SamplingFromProto(dpo.sampling(), stage.seed());
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<StageContext::RewardModel> reward_model,
                          context.LoadRewardModel(dpo.scorer()));
    if (reward_model) options.reward_model = &reward_model->scorer;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<OnlinePreferenceSource> source,
                          OnlinePreferenceSource::Open(options, context.tokenizer()));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> reference,
                          context.LoadInput(run.inputs.reference(), "dpo.reference"));
    setup.data = source.get();
    setup.schedule_tokens = source->prompts() * 2 * FirstSeqLen(stage) * options.epochs;
    setup.on_trainer = [&](Trainer& trainer) { source->SetModels(&trainer.model(), reference.get()); };
    return RunTraining(context, setup, reporter);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Dpo() { return std::make_unique<DpoRunner>(); }

}  // namespace loom::engine::runners
