// Batches of chat examples for SFT stages: a JSONL file of conversations rendered once through a
// chat template (data/chat.h), served as packed (or one-per-row) sequences, with the same
// contract as the pre-training sampler: the same calls give the same global batches on any number
// of data-parallel ranks and after RestoreState.
//
// Rule: examples are read as a stream whose order is reshuffled each epoch from (seed, epoch).
// Rows of a global batch are filled in order from the stream: a row takes the next examples while
// they fit in seq_len positions (packing), or exactly one (no packing); an example longer than
// seq_len + 1 tokens is cut and fills a row alone. Each example keeps its own segment id and
// positions restarting at 0, so no token attends across examples. The state is (epoch, position).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/batch.h"
#include "data/chat.h"
#include "data/tokenizer.h"

namespace loom::data {

struct ChatSamplerOptions {
  // JSONL conversations (OpenAI messages or ShareGPT), or a directory whose *.jsonl files are read
  // in name order (a rejection_sampling stage's dataset).
  std::string path;
  ChatTemplate chat_template = ChatTemplate::kChatML;
  bool packing = true;
  uint64_t seed = 0;
};

class ChatSampler {
 public:
  static absl::StatusOr<std::unique_ptr<ChatSampler>> Open(const ChatSamplerOptions& options,
                                                           const Tokenizer& tokenizer);

  // This rank's rows of the next global batch (see sampler.h for the slicing).
  absl::Status NextBatch(int seq_len, int global_sequences, int dp_rank, int dp_size, TokenBatch* out);

  std::string SaveState() const;
  absl::Status RestoreState(std::string_view blob);

  int64_t epoch() const { return epoch_; }  // completed passes over the examples
  int64_t examples() const { return static_cast<int64_t>(examples_.size()); }
  int64_t examples_consumed() const { return consumed_; }
  // Tokens in one pass over the examples (before padding): what schedules can plan with.
  int64_t tokens_per_epoch() const;

 private:
  ChatSampler() = default;
  const std::vector<uint32_t>& Order(int64_t epoch);
  // The example at the stream position, advancing it.
  const TokenizedExample& Take();

  ChatSamplerOptions options_;
  std::vector<TokenizedExample> examples_;
  int32_t pad_id_ = 0;
  std::string fingerprint_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;  // within the epoch's order
  int64_t consumed_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<uint32_t> order_;
};

}  // namespace loom::data
