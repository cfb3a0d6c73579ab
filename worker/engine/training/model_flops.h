// The model FLOPs of one token, for MFU (model FLOPs utilization: the FLOP/s the model's math
// needs at the measured throughput, over the hardware's peak). The standard estimate, as PaLM
// (Chowdhery et al. 2022, appendix B) quotes MFU with:
//
//   training      6 x N + 12 x (attention context) x d_model per layer   per token
//   forward only  2 x N +  4 x (attention context) x d_model per layer   per token
//
// N is the model's non-embedding parameters: every transformer block's attention and MLP
// matrices and norms, and the final norm; the token embedding and the output head are not counted
// (Kaplan et al.'s convention), so a small model with a large vocabulary shows a lower MFU than
// the work its cores really did. The attention term (scores and weighted values) counts each
// query against its full context, seq_len, or the sliding window on local layers when that is
// smaller; causal masking's halving is ignored, as in the convention. Work the model does not
// train (a reference or teacher model's forward, recomputation) is not counted: MFU measures the
// useful model math only.
//
// TransformerConfig::TrainingFlopsPerToken (the train-step bench) differs on purpose: it counts
// the output head and halves attention, to time the kernels; MFU follows the published convention.
#pragma once

#include <cstdint>

#include "worker/engine/model/transformer_config.h"

namespace loom::engine {

enum class ModelPass {
  kTraining,  // forward, backward and the optimizer step: 3x the forward
  kForward,   // inference, scoring, generation
};

// Non-embedding parameters of the whole model (`model` as resolved from the plan, not a pipeline
// stage's share of it).
int64_t NonEmbeddingParameters(const TransformerConfig& model);

// Model FLOPs for one token at `seq_len` (the standard estimate above).
double ModelFlopsPerToken(const TransformerConfig& model, int seq_len, ModelPass pass);

}  // namespace loom::engine
