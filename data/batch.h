// A batch of token sequences: the one thing the data pipeline hands the training engine.
//
// Every sequence has seq_len input tokens and seq_len next-token targets. Pre-training sequences
// are contiguous windows of a source's token stream; SFT and preference data may pack several
// examples into one sequence, which `segment_ids` and `positions` describe so that no token
// attends across examples and RoPE positions restart in each.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace loom::data {

// A target that takes no loss (prompt tokens in SFT, padding).
inline constexpr int32_t kIgnoreIndex = -1;

struct TokenBatch {
  int batch_size = 0;  // sequences
  int seq_len = 0;     // tokens per sequence
  // [batch_size * seq_len], row-major: token t of sequence b is at b * seq_len + t.
  std::vector<int32_t> inputs;
  // Same layout: the token to predict after inputs[i], or kIgnoreIndex.
  std::vector<int32_t> targets;
  // Same layout, optional. A token attends only to earlier tokens with the same segment id.
  // Empty: every sequence is one segment (plain causal attention).
  std::vector<int32_t> segment_ids;
  // Same layout, optional: the RoPE position of each token (restarting at 0 in each segment).
  // Empty: 0 .. seq_len-1 in every sequence.
  std::vector<int32_t> positions;
  // Preference batches (dpo stages), optional: per row, the frozen reference model's summed
  // log-probability of the row's targets. Rows come in pairs: chosen (even), rejected (odd).
  std::vector<double> reference_logprobs;
  // Policy-gradient batches (rl stages), optional: per row, the sample's advantage; the row's loss
  // is −advantage · (its summed target log-probability).
  std::vector<double> advantages;

  int64_t tokens() const { return int64_t{batch_size} * seq_len; }

  // Shapes the batch for `rows` plain sequences of `length` tokens: inputs and targets sized
  // (contents unspecified), segment_ids and positions empty.
  void Reset(int rows, int length) {
    batch_size = rows;
    seq_len = length;
    inputs.resize(static_cast<size_t>(rows) * static_cast<size_t>(length));
    targets.resize(inputs.size());
    segment_ids.clear();
    positions.clear();
    reference_logprobs.clear();
    advantages.clear();
  }
};

}  // namespace loom::data
