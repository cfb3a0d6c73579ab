#include "worker/engine/rl_source.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/hash.h"
#include "data/verifier.h"
#include "kernels/cpu/policy_gradient.h"
#include "worker/engine/preference_source.h"

namespace loom::engine {
namespace {
constexpr char kStateMagic[] = "loom.rl_source.v1";
}

absl::StatusOr<std::unique_ptr<RlBatchSource>> RlBatchSource::Open(const RlSourceOptions& options,
                                                                   const data::Tokenizer& tokenizer) {
  if (options.samples_per_prompt < 2) {
    return absl::InvalidArgumentError("rl.samples_per_prompt must be at least 2 (the leave-one-out baseline)");
  }
  if (options.epochs < 1) return absl::InvalidArgumentError("dataset.epochs must be at least 1");
  auto source = std::unique_ptr<RlBatchSource>(new RlBatchSource());
  source->options_ = options;
  source->tokenizer_ = &tokenizer;
  LOOM_ASSIGN_OR_RETURN(std::vector<data::Conversation> conversations, data::ReadConversations(options.path));
  uint64_t fingerprint = data::Hash64(tokenizer.hash());
  for (size_t i = 0; i < conversations.size(); ++i) {
    const data::Conversation& c = conversations[i];
    auto last = std::find_if(c.rbegin(), c.rend(), [](const data::ChatMessage& m) { return m.role == "assistant"; });
    if (last == c.rend() || !data::ExtractFinalNumber(last->content)) {
      return absl::InvalidArgumentError(absl::StrCat(options.path, " conversation ", i + 1,
                                                     " has no assistant answer with a number to verify against"));
    }
    Prompt p;
    p.reference = last->content;
    LOOM_ASSIGN_OR_RETURN(p.tokens, data::TokenizePrompt(data::Conversation(c.begin(), last.base() - 1),
                                                         options.chat_template, tokenizer));
    fingerprint = data::Hash64(
        std::string_view(reinterpret_cast<const char*>(p.tokens.data()), p.tokens.size() * sizeof(int32_t)),
        fingerprint);
    source->prompts_.push_back(std::move(p));
  }
  if (source->prompts_.empty()) return absl::FailedPreconditionError(absl::StrCat(options.path, " has no prompt"));
  LOOM_ASSIGN_OR_RETURN(source->end_of_turn_, data::EndOfTurnToken(options.chat_template, tokenizer));
  source->pad_id_ = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
  source->fingerprint_ = absl::StrCat(fingerprint);
  return source;
}

const std::vector<uint32_t>& RlBatchSource::Order(int64_t epoch) {
  if (order_epoch_ != epoch) {
    order_.resize(prompts_.size());
    for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<uint32_t>(i);
    data::SplitMix64 rng(data::Mix64(options_.seed ^ data::Mix64(0x726c0000ull + static_cast<uint64_t>(epoch))));
    for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.Below(i)]);
    order_epoch_ = epoch;
  }
  return order_;
}

absl::Status RlBatchSource::Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                 data::TokenBatch* out) {
  if (policy_ == nullptr || reference_ == nullptr) {
    return absl::FailedPreconditionError("the rl source has no policy or reference model");
  }
  const int k = options_.samples_per_prompt;
  if (global_sequences % (k * dp_size) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("an rl batch of ", global_sequences, " sequences is not a whole number of prompts x ", k,
                     " samples on ", dp_size, " ranks: global_batch_tokens / seq_len must be a multiple of ",
                     "samples_per_prompt x dp"));
  }
  const int global_prompts = global_sequences / k, rank_prompts = global_prompts / dp_size;
  // The stream positions of this rank's prompts (every rank advances past the whole batch).
  std::vector<uint32_t> mine;
  const int64_t block_start = consumed_ + int64_t{dp_rank} * rank_prompts;
  for (int i = 0; i < global_prompts; ++i) {
    const uint32_t index = Order(epoch_)[position_];
    if (i >= dp_rank * rank_prompts && i < (dp_rank + 1) * rank_prompts) mine.push_back(index);
    ++consumed_;
    if (++position_ == prompts()) {
      position_ = 0;
      ++epoch_;
    }
  }

  // Sample K completions of each prompt from the current policy.
  std::vector<std::vector<int32_t>> rows;
  size_t longest = 0;
  for (uint32_t index : mine) {
    for (int j = 0; j < k; ++j) rows.push_back(prompts_[index].tokens);
    longest = std::max(longest, prompts_[index].tokens.size());
  }
  SamplingOptions sampling = options_.sampling;
  sampling.stop_token = end_of_turn_;
  sampling.seed = options_.sampling.seed + static_cast<uint64_t>(block_start) * k;
  Generator generator(*policy_, std::min<int>(static_cast<int>(rows.size()), 64),
                      static_cast<int>(longest) + sampling.max_new_tokens);
  const std::vector<std::vector<int32_t>> completions = generator.Generate(rows, sampling);

  // Rows: prompt + completion (the end-of-turn token included: it is what stops the answer).
  data::TokenBatch batch;
  batch.Reset(static_cast<int>(rows.size()), seq_len);
  std::vector<double> rewards(rows.size());
  double completion_tokens = 0, correct = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const Prompt& p = prompts_[mine[r / k]];
    const std::vector<int32_t>& ids = completions[r];
    completion_tokens += static_cast<double>(ids.size());
    std::vector<int32_t> text_ids = ids;
    if (!text_ids.empty() && text_ids.back() == end_of_turn_) text_ids.pop_back();
    rewards[r] = data::VerifyMathAnswer(tokenizer_->Decode(text_ids), p.reference) == data::MathVerdict::kCorrect;
    correct += rewards[r];
    FillCompletionRow(p.tokens, ids, std::vector<uint8_t>(ids.size(), 1), seq_len, pad_id_,
                      &batch.inputs[r * seq_len], &batch.targets[r * seq_len]);
  }

  if (options_.reward_model != nullptr) {
    std::vector<const std::vector<int32_t>*> row_prompts;
    for (size_t r = 0; r < rows.size(); ++r) row_prompts.push_back(&prompts_[mine[r / k]].tokens);
    rewards = options_.reward_model->Score(row_prompts, completions, pad_id_);
  }
  // KL shaping against the reference, then the leave-one-out advantages.
  const std::vector<double> policy_lp = RowLogProbSums(*policy_, batch);
  const std::vector<double> reference_lp = RowLogProbSums(*reference_, batch);
  double reward_sum = 0, kl_sum = 0, abs_adv = 0;
  std::vector<double> shaped(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const double kl = policy_lp[r] - reference_lp[r];
    shaped[r] = rewards[r] - options_.kl_coef * kl;
    reward_sum += rewards[r];
    kl_sum += kl;
  }
  batch.advantages.resize(rows.size());
  kernels::cpu::RlooAdvantages(shaped.data(), static_cast<int64_t>(mine.size()), k, batch.advantages.data());
  for (double a : batch.advantages) abs_adv += std::fabs(a);
  const double n = std::max<double>(1, static_cast<double>(rows.size()));
  metrics_ = {{"rl/reward", reward_sum / n},
              {"rl/accuracy", correct / n},
              {"rl/kl", kl_sum / n},
              {"rl/advantage_abs", abs_adv / n},
              {"rl/completion_tokens", completion_tokens / n}};
  *out = std::move(batch);
  return absl::OkStatus();
}

std::string RlBatchSource::SaveState() const {
  return absl::StrCat(kStateMagic, " ", options_.seed, " ", fingerprint_, " ", epoch_, " ", position_, " ",
                      consumed_);
}

absl::Status RlBatchSource::RestoreState(std::string_view state) {
  std::vector<std::string> f = absl::StrSplit(AbslView(state), ' ');
  uint64_t seed;
  int64_t epoch, position, consumed;
  if (f.size() != 6 || f[0] != kStateMagic || !absl::SimpleAtoi(f[1], &seed) || !absl::SimpleAtoi(f[3], &epoch) ||
      !absl::SimpleAtoi(f[4], &position) || !absl::SimpleAtoi(f[5], &consumed)) {
    return absl::InvalidArgumentError(absl::StrCat("rl source state '", AbslView(state), "' is malformed"));
  }
  if (seed != options_.seed || f[2] != fingerprint_) {
    return absl::InvalidArgumentError("rl source state was saved with another seed or other data");
  }
  if (epoch < 0 || position < 0 || position >= prompts() || consumed < 0) {
    return absl::InvalidArgumentError("rl source state is out of range");
  }
  epoch_ = epoch;
  position_ = position;
  consumed_ = consumed;
  return absl::OkStatus();
}

}  // namespace loom::engine
