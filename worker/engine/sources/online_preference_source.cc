#include "worker/engine/sources/online_preference_source.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {
constexpr char kStateMagic[] = "loom.online_preference_source.v1";
constexpr uint64_t kShuffleSalt = 0x6f6e6c0000ull;
}  // namespace

absl::StatusOr<std::unique_ptr<OnlinePreferenceSource>> OnlinePreferenceSource::Open(
    const OnlinePreferenceOptions& options, const data::Tokenizer& tokenizer) {
  if (options.samples_per_prompt < 2) {
    return absl::InvalidArgumentError("dpo.samples_per_prompt must be at least 2 (chosen and rejected)");
  }
  LOOM_ASSIGN_OR_RETURN(PromptStream stream, PromptStream::Open(options.path, options.chat_template, tokenizer,
                                                                options.seed, options.epochs, kShuffleSalt));
  return std::unique_ptr<OnlinePreferenceSource>(new OnlinePreferenceSource(options, std::move(stream)));
}

absl::Status OnlinePreferenceSource::Next(int seq_len, int global_sequences, int dp_rank, int dp_size,
                                          data::TokenBatch* out) {
  if (policy_ == nullptr || reference_ == nullptr) {
    return absl::FailedPreconditionError("the online dpo source has no policy or reference model");
  }
  if (global_sequences % (2 * dp_size) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a dpo batch of ", global_sequences, " sequences does not split into whole pairs on ", dp_size,
        " ranks: global_batch_tokens / seq_len must be a multiple of 2 x dp"));
  }
  const int n = options_.samples_per_prompt;
  const PromptStream::Block block = stream_.Take(global_sequences / 2, dp_rank, dp_size);
  const std::vector<std::vector<int32_t>> samples = stream_.Sample(*policy_, block, n, options_.sampling);

  std::vector<double> scores(samples.size());
  double correct = 0;
  for (size_t r = 0; r < samples.size(); ++r) {
    scores[r] = stream_.Correct(block.prompts[r / n], samples[r]);
    correct += scores[r];
  }
  if (options_.reward_model != nullptr) {
    std::vector<const std::vector<int32_t>*> row_prompts;
    for (size_t r = 0; r < samples.size(); ++r) row_prompts.push_back(&stream_.tokens(block.prompts[r / n]));
    scores = options_.reward_model->Score(row_prompts, samples, stream_.pad_id());
  }

  // Pair i: the best and the worst sample of prompt i (the first of equals).
  data::TokenBatch batch;
  batch.Reset(static_cast<int>(2 * block.prompts.size()), seq_len);
  double tied = 0, chosen_score = 0, rejected_score = 0;
  for (size_t i = 0; i < block.prompts.size(); ++i) {
    const size_t base = i * n;
    size_t best = base, worst = base;
    for (size_t r = base; r < base + n; ++r) {
      if (scores[r] > scores[best]) best = r;
      if (scores[r] < scores[worst]) worst = r;
    }
    if (scores[best] == scores[worst]) {
      worst = best;  // nothing to prefer: the same sample twice, zero gradient
      ++tied;
    }
    chosen_score += scores[best];
    rejected_score += scores[worst];
    const std::vector<int32_t>& prompt = stream_.tokens(block.prompts[i]);
    for (const auto& [row, sample] : {std::pair{2 * i, best}, std::pair{2 * i + 1, worst}}) {
      FillCompletionRow(prompt, samples[sample], std::vector<uint8_t>(samples[sample].size(), 1), seq_len,
                        stream_.pad_id(), &batch.inputs[row * seq_len], &batch.targets[row * seq_len]);
    }
  }
  batch.reference_logprobs = RowLogProbSums(*reference_, batch);
  const double prompts = std::max<double>(1, static_cast<double>(block.prompts.size()));
  metrics_ = {{"online/accuracy", samples.empty() ? 0.0 : correct / static_cast<double>(samples.size())},
              {"online/tied", tied / prompts},
              {"online/chosen_score", chosen_score / prompts},
              {"online/rejected_score", rejected_score / prompts}};
  *out = std::move(batch);
  return absl::OkStatus();
}

std::string OnlinePreferenceSource::SaveState() const { return stream_.SaveState(kStateMagic); }

absl::Status OnlinePreferenceSource::RestoreState(std::string_view state) {
  return stream_.RestoreState(kStateMagic, state);
}

}  // namespace loom::engine
