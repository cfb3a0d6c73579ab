#include "worker/engine/model/parameters.h"

#include "absl/strings/str_cat.h"

namespace loom::engine {

int64_t ParameterLayout::Add(std::string name, std::vector<int64_t> shape, bool decay) {
  int64_t size = 1;
  for (int64_t d : shape) size *= d;
  // Start every tensor on a 64-byte boundary (16 floats): aligned vector loads in the kernels.
  total_ = (total_ + 15) / 16 * 16;
  tensors_.push_back(ParamTensor{std::move(name), std::move(shape), total_, size, decay});
  total_ += size;
  return tensors_.back().offset;
}

ParameterLayout::ParameterLayout(const TransformerConfig& c) {
  const int64_t d = c.d_model, q = int64_t{c.heads} * c.head_dim, kv = int64_t{c.kv_heads} * c.head_dim;
  // A pipeline's last stage holds a copy of a tied embedding as its head.
  if (c.has_embedding || (c.has_head && c.tied_embeddings)) {
    embedding_ = Add("model.embed_tokens.weight", {c.vocab, d}, false);
  }
  for (int l = 0; l < c.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", c.first_layer + l, ".");
    LayerOffsets o;
    o.input_norm = Add(p + "input_layernorm.weight", {d}, false);
    o.q = Add(p + "self_attn.q_proj.weight", {q, d}, true);
    o.k = Add(p + "self_attn.k_proj.weight", {kv, d}, true);
    o.v = Add(p + "self_attn.v_proj.weight", {kv, d}, true);
    o.o = Add(p + "self_attn.o_proj.weight", {d, q}, true);
    o.post_norm = Add(p + "post_attention_layernorm.weight", {d}, false);
    o.gate = Add(p + "mlp.gate_proj.weight", {c.ffn, d}, true);
    o.up = Add(p + "mlp.up_proj.weight", {c.ffn, d}, true);
    o.down = Add(p + "mlp.down_proj.weight", {d, c.ffn}, true);
    layers_.push_back(o);
  }
  if (c.has_head) {
    final_norm_ = Add("model.norm.weight", {d}, false);
    lm_head_ = c.tied_embeddings ? embedding_ : Add("lm_head.weight", {c.vocab, d}, true);
  }
}

const ParamTensor* ParameterLayout::Find(const std::string& name) const {
  for (const ParamTensor& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

}  // namespace loom::engine
