// average and merge stages: no training, one weights-only checkpoint of the inputs merged
// (model/merge.h), written by rank 0 alone whatever the layout and reported as final.
#include "absl/time/clock.h"
#include "common/checkpoint_io.h"
#include "common/clock.h"
#include "common/status_macros.h"
#include "worker/engine/model/merge.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/stage_context.h"

namespace loom::engine::runners {
namespace {

class MergeRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    if (run.layout.rank() != 0) return reporter.Progress({});  // nothing to do: this rank ran
    const loom::v1::Stage& stage = run.stage;
    if (run.checkpoint_dir.empty()) {
      return StageError(stage, absl::StatusCode::kFailedPrecondition,
                        "an average or merge writes one checkpoint: give the stage a checkpoint directory");
    }
    std::vector<std::string> paths;
    std::string base;
    if (stage.has_average()) {
      paths.assign(run.inputs.checkpoints().begin(), run.inputs.checkpoints().end());
    } else {
      paths.assign(run.inputs.merge_inputs().begin(), run.inputs.merge_inputs().end());
      base = run.inputs.merge_base();
    }
    for (const std::string& path : paths) {
      if (path.empty()) {
        return StageError(stage, absl::StatusCode::kFailedPrecondition, "an input was not resolved to a checkpoint");
      }
    }
    const std::string out = run.checkpoint_dir + "/" + CheckpointDirName(0);
    const absl::Time start = MonotonicNow();
    LOOM_RETURN_IF_ERROR(
        MergeCheckpoints(paths, base, MergeOptionsFromStage(stage, stage.seed()), out, run.plan_id, stage.name(), 0));
    CheckpointWritten c;
    c.path = out;
    c.final = true;
    c.save_seconds = absl::ToDoubleSeconds(MonotonicNow() - start);
    return reporter.Checkpoint(c);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Merge() { return std::make_unique<MergeRunner>(); }

}  // namespace loom::engine::runners
