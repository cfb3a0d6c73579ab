#include "worker/engine/sources/prompt_stream.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/hash.h"
#include "data/verifier.h"

namespace loom::engine {

absl::StatusOr<PromptStream> PromptStream::Open(const std::string& path, data::ChatTemplate chat_template,
                                                const data::Tokenizer& tokenizer, uint64_t seed, int epochs,
                                                uint64_t salt) {
  if (epochs < 1) return absl::InvalidArgumentError("dataset.epochs must be at least 1");
  PromptStream s;
  s.tokenizer_ = &tokenizer;
  s.seed_ = seed;
  s.salt_ = salt;
  s.epochs_ = epochs;
  LOOM_ASSIGN_OR_RETURN(std::vector<data::Conversation> conversations, data::ReadConversations(path));
  uint64_t fingerprint = data::Hash64(tokenizer.hash());
  for (size_t i = 0; i < conversations.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(data::MathPrompt split,
                          data::SplitMathConversation(conversations[i], chat_template, tokenizer,
                                                      absl::StrCat(path, " conversation ", i + 1)));
    Prompt p;
    p.reference = std::move(split.reference);
    p.tokens = std::move(split.tokens);
    fingerprint = data::Hash64(
        std::string_view(reinterpret_cast<const char*>(p.tokens.data()), p.tokens.size() * sizeof(int32_t)),
        fingerprint);
    s.prompts_.push_back(std::move(p));
  }
  if (s.prompts_.empty()) return absl::FailedPreconditionError(absl::StrCat(path, " has no prompt"));
  LOOM_ASSIGN_OR_RETURN(s.end_of_turn_, data::EndOfTurnToken(chat_template, tokenizer));
  s.pad_id_ = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
  s.fingerprint_ = absl::StrCat(fingerprint);
  return s;
}

const std::vector<uint32_t>& PromptStream::Order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    data::EpochOrder(prompts_.size(), seed_, salt_, epoch, &order_);
    order_epoch_ = epoch;
  }
  return order_;
}

PromptStream::Block PromptStream::Take(int global, int dp_rank, int dp_size) {
  const int per_rank = global / std::max(1, dp_size);
  Block block;
  block.first_position = consumed_ + int64_t{dp_rank} * per_rank;
  for (int i = 0; i < global; ++i) {
    const uint32_t index = Order(epoch_)[position_];
    if (i >= dp_rank * per_rank && i < (dp_rank + 1) * per_rank) block.prompts.push_back(index);
    ++consumed_;
    if (++position_ == size()) {
      position_ = 0;
      ++epoch_;
    }
  }
  return block;
}

std::vector<std::vector<int32_t>> PromptStream::Sample(const Transformer& policy, const Block& block, int k,
                                                       SamplingOptions sampling) const {
  std::vector<std::vector<int32_t>> rows;
  size_t longest = 0;
  for (uint32_t index : block.prompts) {
    for (int j = 0; j < k; ++j) rows.push_back(prompts_[index].tokens);
    longest = std::max(longest, prompts_[index].tokens.size());
  }
  if (rows.empty()) return rows;
  sampling.stop_token = end_of_turn_;
  sampling.seed += static_cast<uint64_t>(block.first_position) * k;
  Generator generator(policy, std::min<int>(static_cast<int>(rows.size()), 64),
                      static_cast<int>(longest) + sampling.max_new_tokens);
  return generator.Generate(rows, sampling);
}

bool PromptStream::Correct(uint32_t index, const std::vector<int32_t>& completion) const {
  std::vector<int32_t> ids = completion;
  if (!ids.empty() && ids.back() == end_of_turn_) ids.pop_back();
  return data::VerifyMathAnswer(tokenizer_->Decode(ids), prompts_[index].reference) == data::MathVerdict::kCorrect;
}

std::string PromptStream::SaveState(std::string_view magic) const {
  return absl::StrCat(AbslView(magic), " ", seed_, " ", fingerprint_, " ", epoch_, " ", position_, " ", consumed_);
}

absl::Status PromptStream::RestoreState(std::string_view magic, std::string_view state) {
  std::vector<std::string> f = absl::StrSplit(AbslView(state), ' ');
  uint64_t seed;
  int64_t epoch, position, consumed;
  if (f.size() != 6 || f[0] != magic || !absl::SimpleAtoi(f[1], &seed) || !absl::SimpleAtoi(f[3], &epoch) ||
      !absl::SimpleAtoi(f[4], &position) || !absl::SimpleAtoi(f[5], &consumed)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt stream state '", AbslView(state), "' is malformed"));
  }
  if (seed != seed_ || f[2] != fingerprint_) {
    return absl::InvalidArgumentError("prompt stream state was saved with another seed or other data");
  }
  if (epoch < 0 || position < 0 || position >= size() || consumed < 0) {
    return absl::InvalidArgumentError("prompt stream state is out of range");
  }
  epoch_ = epoch;
  position_ = position;
  consumed_ = consumed;
  return absl::OkStatus();
}

}  // namespace loom::engine
