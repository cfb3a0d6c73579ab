#include "worker/engine/sources/rl_source.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/policy_gradient.h"

namespace loom::engine {
namespace {
constexpr char kStateMagic[] = "loom.rl_source.v1";
constexpr uint64_t kShuffleSalt = 0x726c0000ull;
}  // namespace

absl::StatusOr<std::unique_ptr<RlBatchSource>> RlBatchSource::Open(const RlSourceOptions& options,
                                                                   const data::Tokenizer& tokenizer) {
  if (options.samples_per_prompt < 2) {
    return absl::InvalidArgumentError("rl.samples_per_prompt must be at least 2 (the leave-one-out baseline)");
  }
  LOOM_ASSIGN_OR_RETURN(PromptStream stream, PromptStream::Open(options.path, options.chat_template, tokenizer,
                                                                options.seed, options.epochs, kShuffleSalt));
  return std::unique_ptr<RlBatchSource>(new RlBatchSource(options, std::move(stream)));
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
  const PromptStream::Block block = stream_.Take(global_sequences / k, dp_rank, dp_size);
  const std::vector<std::vector<int32_t>> completions = stream_.Sample(*policy_, block, k, options_.sampling);

  // Rows: prompt + completion (the end-of-turn token included: it is what stops the answer).
  data::TokenBatch batch;
  batch.Reset(static_cast<int>(completions.size()), seq_len);
  std::vector<double> rewards(completions.size());
  std::vector<const std::vector<int32_t>*> row_prompts;
  double completion_tokens = 0, correct = 0;
  for (size_t r = 0; r < completions.size(); ++r) {
    const uint32_t prompt = block.prompts[r / k];
    const std::vector<int32_t>& ids = completions[r];
    completion_tokens += static_cast<double>(ids.size());
    rewards[r] = stream_.Correct(prompt, ids);
    correct += rewards[r];
    row_prompts.push_back(&stream_.tokens(prompt));
    FillCompletionRow(stream_.tokens(prompt), ids, std::vector<uint8_t>(ids.size(), 1), seq_len, stream_.pad_id(),
                      &batch.inputs[r * seq_len], &batch.targets[r * seq_len]);
  }
  if (options_.reward_model != nullptr) rewards = options_.reward_model->Score(row_prompts, completions, stream_.pad_id());

  // KL shaping against the reference, then the leave-one-out advantages.
  const std::vector<double> policy_lp = RowLogProbSums(*policy_, batch);
  const std::vector<double> reference_lp = RowLogProbSums(*reference_, batch);
  double reward_sum = 0, kl_sum = 0, abs_adv = 0;
  std::vector<double> shaped(completions.size());
  for (size_t r = 0; r < completions.size(); ++r) {
    const double kl = policy_lp[r] - reference_lp[r];
    shaped[r] = rewards[r] - options_.kl_coef * kl;
    reward_sum += rewards[r];
    kl_sum += kl;
  }
  batch.advantages.resize(completions.size());
  kernels::cpu::RlooAdvantages(shaped.data(), static_cast<int64_t>(block.prompts.size()), k, batch.advantages.data());
  for (double a : batch.advantages) abs_adv += std::fabs(a);
  const double n = std::max<double>(1, static_cast<double>(completions.size()));
  metrics_ = {{"rl/reward", reward_sum / n},
              {"rl/accuracy", correct / n},
              {"rl/kl", kl_sum / n},
              {"rl/advantage_abs", abs_adv / n},
              {"rl/completion_tokens", completion_tokens / n}};
  *out = std::move(batch);
  return absl::OkStatus();
}

std::string RlBatchSource::SaveState() const { return stream_.SaveState(kStateMagic); }

absl::Status RlBatchSource::RestoreState(std::string_view state) { return stream_.RestoreState(kStateMagic, state); }

}  // namespace loom::engine
