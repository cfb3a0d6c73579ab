// Megatron-style tensor parallelism for the Llama decoder: which way each tensor splits across
// the `tp` ranks of a tensor-parallel group, the per-rank architecture that split leaves, moving
// weights (and optimizer moments, laid out alike) between the whole model and one rank's shard,
// and the two reductions a split vocabulary needs (cross-entropy, gradient norm).
//
//   q/k/v_proj, gate/up_proj   column-parallel: rank r holds rows [r·R/tp, (r+1)·R/tp) of [out, in]
//                              (its heads, its KV heads, its slice of the MLP's hidden units)
//   o_proj, down_proj          row-parallel: rank r holds the matching columns; the outputs are
//                              partial sums, all-reduced before the residual add
//   embed_tokens, lm_head      vocabulary-parallel: rank r holds rows [r·V/tp, (r+1)·V/tp)
//   norms                      replicated (their inputs and gradients are the same on every rank)
//
// A rank's shard is itself a valid (narrower) TransformerConfig, so the model code runs on it
// unchanged apart from the all-reduces (transformer.cc). Checkpoints hold the whole model: ranks
// gather at save and slice at load, so any layout loads any other.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/model/parameters.h"
#include "worker/engine/model/transformer_config.h"

namespace loom::engine {

enum class TensorSplit { kReplicated, kRows, kColumns };

// How the tensor of this Hugging Face name splits (the table above).
TensorSplit SplitOf(const std::string& name);

// One rank's architecture under `tp` ranks: heads, kv_heads, ffn and vocab divided by tp. An error
// names the model field that tp does not divide.
absl::StatusOr<TransformerConfig> TensorParallelConfig(const TransformerConfig& whole, int tp);

// Copies rank `tp_rank`'s shard of every tensor of `whole` (laid out by `whole_layout`) into
// `shard` (laid out by `shard_layout`, the layout of TensorParallelConfig(whole config, tp)).
void ShardTensors(const ParameterLayout& whole_layout, const float* whole, const ParameterLayout& shard_layout,
                  int tp_rank, int tp, float* shard);

// The inverse: `gathered` is every rank's shard buffer in rank order ([tp][shard_layout.total()],
// an all-gather); writes the whole model's tensors into `whole`.
void UnshardTensors(const ParameterLayout& whole_layout, const ParameterLayout& shard_layout, int tp,
                    const float* gathered, float* whole);

// Every rank's `shard` gathered through `group` into `whole` (a collective).
absl::Status GatherTensors(Communicator& group, const ParameterLayout& whole_layout,
                           const ParameterLayout& shard_layout, const float* shard, float* whole);

// Cross-entropy over a vocabulary split across `group`: logits [rows, local_vocab] hold this
// rank's columns [vocab_begin, vocab_begin + local_vocab); targets are global ids or
// kIgnoreTarget. Every rank returns the same Σ over rows of logsumexp − logit[target] (the row
// max by all-gather, the exp-sums and target logits by an all-reduce) and, when dlogits is not
// null, writes grad_scale · (softmax − onehot) for its own columns there (may alias logits).
absl::StatusOr<double> VocabParallelCrossEntropy(Communicator& group, const float* logits,
                                                 const int32_t* targets, int64_t rows, int64_t local_vocab,
                                                 int64_t vocab_begin, float grad_scale, float* dlogits);

// sqrt(Σ g²) over the whole model from one rank's shard: split tensors' squares summed over the
// group, replicated tensors counted once.
absl::StatusOr<double> TensorParallelGradNorm(Communicator& group, const ParameterLayout& shard_layout,
                                              const float* grads);

}  // namespace loom::engine
