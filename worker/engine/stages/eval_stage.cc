// eval stages: the held-out loss of the `from` model on eval.sets and its math accuracy, reported
// once by rank 0; the stage writes no checkpoint (it produces measurements only).
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/engine/stages/runners.h"
#include "worker/engine/stages/stage_context.h"

namespace loom::engine::runners {
namespace {

class EvalRunner : public StageRunner {
 public:
  absl::Status Run(const StageRun& run, StageReporter& reporter) override {
    if (run.layout.rank() != 0) return reporter.Progress({});  // nothing to measure twice
    LOOM_ASSIGN_OR_RETURN(StageContext context, StageContext::Open(run, /*join_groups=*/false));
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Transformer> model, context.LoadInput(run.inputs.from(), "from"));
    if (context.tokenizer().vocab_size() > model->config().vocab) {
      return absl::InvalidArgumentError(absl::StrFormat("the tokenizer has %d pieces, more than the model's vocab_size %d",
                                                        context.tokenizer().vocab_size(), model->config().vocab));
    }
    const loom::v1::EvalConfig& eval = run.stage.eval();
    ProgressReport p;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Evaluator> evaluator, context.OpenEvaluator());
    if (evaluator) {
      LOOM_ASSIGN_OR_RETURN(auto losses, evaluator->Evaluate(*model, eval.seq_len(), 1));
      for (const auto& [set, loss] : losses) {
        p.eval_loss[set] = loss;
        reporter.Log(absl::StrFormat("eval %s loss %.6f", set, loss));
      }
    }
    if (eval.math_accuracy()) LOOM_RETURN_IF_ERROR(context.MeasureMath(*model, 0, "", &p, reporter));
    return reporter.Progress(p);
  }
};

}  // namespace

std::unique_ptr<StageRunner> Eval() { return std::make_unique<EvalRunner>(); }

}  // namespace loom::engine::runners
