// Token embedding lookup and its gradient.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// out[t, :] = table[ids[t], :] for t < tokens; ids must be in [0, vocab).
void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t tokens, int64_t dim);

// dtable[ids[t], :] += dout[t, :], in token order (deterministic).
void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t tokens, int64_t dim);

}  // namespace loom::kernels::cpu
