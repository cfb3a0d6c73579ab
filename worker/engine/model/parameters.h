// Where every parameter lives: one contiguous buffer per rank, cut into named tensors with
// Hugging Face Llama names and layouts ([out, in] for linear weights), so checkpoints export as
// they are, and all-reduce, save and average act on one array.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/engine/model/transformer_config.h"

namespace loom::engine {

struct ParamTensor {
  std::string name;            // e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // [out, in] for linear weights
  int64_t offset = 0;          // in floats, into the parameter buffer
  int64_t size = 0;            // floats
  bool decay = false;          // AdamW weight decay applies (matrices, but not the embedding)
};

// Offsets of one layer's tensors, for the hot loops.
struct LayerOffsets {
  int64_t input_norm, q, k, v, o, post_norm, gate, up, down;
};

class ParameterLayout {
 public:
  explicit ParameterLayout(const TransformerConfig& config);

  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  int64_t total() const { return total_; }
  // nullptr when there is no tensor of that name.
  const ParamTensor* Find(const std::string& name) const;

  // Offsets; -1 for what a pipeline stage does not hold.
  int64_t embedding() const { return embedding_; }
  int64_t final_norm() const { return final_norm_; }
  // The output head: its own tensor, or the embedding when tied.
  int64_t lm_head() const { return lm_head_; }
  const LayerOffsets& layer(int l) const { return layers_[l]; }

 private:
  int64_t Add(std::string name, std::vector<int64_t> shape, bool decay);

  std::vector<ParamTensor> tensors_;
  std::vector<LayerOffsets> layers_;
  int64_t total_ = 0, embedding_ = -1, final_norm_ = -1, lm_head_ = -1;
};

}  // namespace loom::engine
