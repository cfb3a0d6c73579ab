// Causal self-attention with grouped-query heads, an optional sliding window and packed
// segments, forward and backward.
//
// Query i attends to key j iff j <= i, i - j < window (when window > 0), and both lie in the same
// segment (segments are contiguous runs of equal segment id). Like flash attention, only the
// log-sum-exp of each row is saved; the backward pass recomputes the probabilities block by
// block, so no [seq, seq] matrix outlives a block of 64 query rows.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq_len = 0;
  int heads = 0;     // query heads
  int kv_heads = 0;  // key/value heads; heads % kv_heads == 0
  int head_dim = 0;
  int window = 0;  // sliding window in tokens; 0 = none
};

// q: [batch, seq, heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim];
// segment_ids: [batch, seq] or null; out: like q; lse: [batch, heads, seq].
void AttentionForward(const AttentionShape& shape, const float* q, const float* k, const float* v,
                      const int32_t* segment_ids, float* out, float* lse);

// dq, dk, dv are written (not accumulated).
void AttentionBackward(const AttentionShape& shape, const float* q, const float* k, const float* v,
                       const float* out, const float* lse, const float* dout, const int32_t* segment_ids,
                       float* dq, float* dk, float* dv);

}  // namespace loom::kernels::cpu
