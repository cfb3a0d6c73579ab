// rejection_sampling stages: this rank's block of the dataset's prompts, N samples each from the
// `from` model, scored by the verifier or a reward model (rejection_sampling.h). The kept examples
// go to <checkpoint_dir>/dataset/part-<dp rank>.jsonl (and as token shards beside it), and the
// directory is reported as the stage's final "checkpoint", one shard per rank, which later
// stages read through dataset.from_stage. pass@1 and best-of-N are summed over the ranks.
#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "data/chat.h"
#include "worker/engine/stages/rejection_sampling.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/stage_context.h"

namespace loom::engine::runners {
namespace {

class RejectionSamplingRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    if (run.checkpoint_dir.empty()) {
      return StageError(run.stage, absl::StatusCode::kFailedPrecondition,
                        "rejection sampling writes its dataset under the stage's checkpoint directory: give one");
    }
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/true));
    const loom::v1::Stage& stage = run.stage;
    const loom::v1::RejectionSamplingConfig& rs = stage.rejection_sampling();
    LOOM_ASSIGN_OR_RETURN(std::vector<data::Conversation> problems, data::ReadConversations(context.DatasetPath()));
    if (rs.max_prompts() > 0 && problems.size() > static_cast<size_t>(rs.max_prompts())) {
      problems.resize(rs.max_prompts());
    }
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, context.LoadInput(run.inputs.from(), "from"));

    RejectionSamplingOptions options;
    options.samples_per_prompt = rs.samples_per_prompt();
    options.sampling = SamplingFromProto(rs.sampling(), stage.seed());
    options.keep = rs.keep() == loom::v1::RejectionSamplingConfig::KEEP_ALL_CORRECT
                       ? RejectionSamplingOptions::Keep::kAllCorrect
                       : RejectionSamplingOptions::Keep::kBest;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<StageContext::RewardModel> reward_model,
                          context.LoadRewardModel(rs.scorer()));
    if (reward_model) options.reward_model = &reward_model->scorer;
    const RankLayout& layout = run.layout;
    size_t first = 0, count = 0;
    PromptBlock(problems.size(), layout.dp_rank, std::max(1, layout.dp), &first, &count);
    reporter.Log(absl::StrFormat("sampling prompts %d..%d of %d, %d samples each", first, first + count,
                                 problems.size(), options.samples_per_prompt));
    const absl::Time start = MonotonicNow();
    LOOM_ASSIGN_OR_RETURN(RejectionSamplingResult result,
                          SampleAndVerify(*model, context.tokenizer(), problems, first, count, options));

    const std::string dir = run.checkpoint_dir + "/dataset";
    std::filesystem::create_directories(dir);
    const std::string part = absl::StrCat(dir, "/part-", absl::Dec(layout.dp_rank, absl::kZeroPad5));
    LOOM_RETURN_IF_ERROR(WriteFileDurably(part + ".jsonl.tmp", ConversationsToJsonl(result.kept)));
    LOOM_RETURN_IF_ERROR(RenameDurably(part + ".jsonl.tmp", part + ".jsonl"));
    // The same examples as token shards (tokens and loss mask), for stages that read shards.
    LOOM_RETURN_IF_ERROR(data::WriteChatShards(part, result.kept, options.chat_template, context.tokenizer()));

    double counts[5] = {double(result.prompts), double(result.samples), double(result.correct_samples),
                        double(result.solved_prompts), double(result.kept.size())};
    if (Communicator* data = context.groups().data) LOOM_RETURN_IF_ERROR(data->AllReduceSum(counts, 5));
    ProgressReport p;
    p.eval_metrics["rs/prompts"] = counts[0];
    p.eval_metrics["rs/samples"] = counts[1];
    p.eval_metrics["rs/pass@1"] = counts[1] > 0 ? counts[2] / counts[1] : 0.0;
    p.eval_metrics["rs/best_of_n"] = counts[0] > 0 ? counts[3] / counts[0] : 0.0;
    p.eval_metrics["rs/kept"] = counts[4];
    reporter.Log(absl::StrFormat(
        "rejection sampling: %.0f prompts x %d samples in %.1f s: pass@1 %.4f, best-of-%d %.4f, %.0f examples kept",
        counts[0], options.samples_per_prompt, absl::ToDoubleSeconds(MonotonicNow() - start),
        p.eval_metrics["rs/pass@1"], options.samples_per_prompt, p.eval_metrics["rs/best_of_n"], counts[4]));
    LOOM_RETURN_IF_ERROR(reporter.Progress(p));

    CheckpointWritten done;
    done.path = dir;
    done.num_shards = std::max(1, layout.world_size());
    done.shard = layout.rank();
    done.final = true;
    return reporter.Checkpoint(done);
  }
};

}  // namespace

std::unique_ptr<StageRunner> RejectionSampling() { return std::make_unique<RejectionSamplingRunner>(); }

}  // namespace loom::engine::runners
