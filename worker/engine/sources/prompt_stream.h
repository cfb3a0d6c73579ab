// The prompts of an on-policy stage (rl, online dpo): math conversations whose last assistant turn
// is the reference answer, read as a stream reshuffled each epoch from (seed, epoch), sampled by the
// current policy with seeds tied to stream positions (sample j of the prompt at position s draws
// from Random(seed + s·K + j)), so the samples depend neither on the rank split nor on a resume.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "worker/engine/model/generator.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

class PromptStream {
 public:
  // `salt` separates the shuffles of different stage kinds with the same seed.
  static absl::StatusOr<PromptStream> Open(const std::string& path, data::ChatTemplate chat_template,
                                           const data::Tokenizer& tokenizer, uint64_t seed, int epochs,
                                           uint64_t salt);

  struct Block {
    std::vector<uint32_t> prompts;  // this rank's prompts (indices)
    int64_t first_position = 0;     // the stream position of the first
  };
  // Advances past `global` prompts and returns this rank's contiguous block of them.
  Block Take(int global, int dp_rank, int dp_size);
  // k completions of each prompt of `block` from `policy` (each ends with end_of_turn() unless
  // cut by max_new_tokens), prompt-major.
  std::vector<std::vector<int32_t>> Sample(const Transformer& policy, const Block& block, int k,
                                           SamplingOptions sampling) const;
  // The verifier's verdict on a completion of prompt `index`.
  bool Correct(uint32_t index, const std::vector<int32_t>& completion) const;

  const std::vector<int32_t>& tokens(uint32_t index) const { return prompts_[index].tokens; }
  int64_t size() const { return static_cast<int64_t>(prompts_.size()); }
  bool Exhausted() const { return epoch_ >= epochs_; }
  int32_t pad_id() const { return pad_id_; }

  std::string SaveState(std::string_view magic) const;
  absl::Status RestoreState(std::string_view magic, std::string_view state);

 private:
  struct Prompt {
    std::vector<int32_t> tokens;
    std::string reference;
  };
  const std::vector<uint32_t>& Order(int64_t epoch);

  const data::Tokenizer* tokenizer_ = nullptr;
  std::vector<Prompt> prompts_;
  uint64_t seed_ = 0, salt_ = 0;
  int epochs_ = 1;
  int32_t end_of_turn_ = -1, pad_id_ = 0;
  std::string fingerprint_;
  int64_t epoch_ = 0, position_ = 0, consumed_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<uint32_t> order_;
};

}  // namespace loom::engine
