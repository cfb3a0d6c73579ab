// Pipeline parallelism for the Llama decoder: the layers cut into `pp` contiguous stages, the
// embedding on the first, the final norm and head on the last (which keeps its own copy of a
// tied embedding, its gradient summed with the first stage's so the copies never drift), and the
// 1F1B schedule that runs one optimizer step's micro-batches through the stages.
//
// A stage is a Transformer whose TransformerConfig covers its layers only (first_layer,
// has_embedding, has_head). Between stages go hidden states [tokens, d_model] forward and their
// gradients back, by tagged send/recv. A stage other than the last recomputes a micro-batch's
// forward from its saved input just before that micro-batch's backward (full activation
// recomputation): it keeps one input per micro-batch in flight, not every layer's activations.
// Checkpoints hold the whole model, gathered from the stages at save and cut at load.
#pragma once

#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/model/parameters.h"
#include "worker/engine/model/transformer.h"
#include "worker/engine/model/transformer_config.h"

namespace loom::engine {

// Stage `pp_rank` of `pp`: layers split evenly, the first (layers % pp) stages one more. An
// error names parallel.pp when there are more stages than layers.
absl::StatusOr<TransformerConfig> PipelineStageConfig(const TransformerConfig& whole, int pp, int pp_rank);

// Every stage's tensors gathered through `group` (the pipeline, rank = stage) into `whole`,
// laid out by ParameterLayout(whole_config). `stage` is this rank's buffer (weights, gradients
// or optimizer moments, laid out like its stage's parameters: under tensor parallelism, gathered
// over the tensor group first). A collective.
absl::Status GatherStages(Communicator& group, const TransformerConfig& whole_config, const float* stage,
                          float* whole);

// With tied embeddings, the first and last stages' embedding gradients summed into both (the
// same floats on both, so the copies update identically). Nothing otherwise.
absl::Status SumTiedEmbeddingGrads(Communicator& group, Transformer& stage);

// sqrt(Σ g²) over the whole model from the stages (the head's copy of a tied embedding counted
// once). With a tensor-parallel group inside each stage (`tensor` not null), split tensors' squares
// are summed over it first and replicated ones counted once. A collective.
absl::StatusOr<double> PipelineGradNorm(Communicator& group, const Transformer& stage,
                                        Communicator* tensor = nullptr);

// The last stage's loss over one micro-batch's logits: returns its sum and writes
// d(loss)/d(logits) over the logits in place.
using MicroBatchLoss = std::function<absl::StatusOr<double>(const data::TokenBatch& micro_batch, float* logits)>;

// Forward and backward of every micro-batch through this stage, 1F1B: stage s runs pp − s − 1
// warm-up forwards, then alternates one forward and one backward, then drains the backwards.
// Gradients add into stage.grads(). Returns the loss sum (the last stage's; 0 elsewhere).
absl::StatusOr<double> RunOneForwardOneBackward(Communicator& group, Transformer& stage,
                                                const std::vector<data::TokenBatch>& micro_batches,
                                                const MicroBatchLoss& loss);

}  // namespace loom::engine
