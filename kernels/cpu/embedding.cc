#include "kernels/cpu/embedding.h"

#include <cstring>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {

void EmbeddingForward(const int32_t* ids, const float* table, float* out, int64_t tokens, int64_t dim) {
  ParallelFor(tokens, 256, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) std::memcpy(out + t * dim, table + ids[t] * dim, sizeof(float) * dim);
  });
}

void EmbeddingBackward(const int32_t* ids, const float* dout, float* dtable, int64_t tokens, int64_t dim) {
  // Columns in parallel, tokens in order: no races and a fixed summation order.
  ParallelFor(dim, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < tokens; ++t) {
      const float* __restrict g = dout + t * dim;
      float* __restrict row = dtable + ids[t] * dim;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  });
}

}  // namespace loom::kernels::cpu
