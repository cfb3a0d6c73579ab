#include "worker/engine/stages/rejection_sampling.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "data/verifier.h"
#include "nlohmann/json.hpp"

namespace loom::engine {

void PromptBlock(size_t total, int rank, int ranks, size_t* first, size_t* count) {
  const size_t r = static_cast<size_t>(rank), n = static_cast<size_t>(std::max(1, ranks));
  *first = total * r / n;
  *count = total * (r + 1) / n - *first;
}

absl::StatusOr<RejectionSamplingResult> SampleAndVerify(const Transformer& model, const data::Tokenizer& tokenizer,
                                                        const std::vector<data::Conversation>& problems, size_t first,
                                                        size_t count, const RejectionSamplingOptions& options) {
  const int n = std::max(1, options.samples_per_prompt);
  std::vector<data::MathPrompt> prompts;
  size_t longest = 0;
  for (size_t g = first; g < first + count && g < problems.size(); ++g) {
    LOOM_ASSIGN_OR_RETURN(data::MathPrompt p, data::SplitMathConversation(problems[g], options.chat_template, tokenizer,
                                                                          absl::StrCat("prompt ", g + 1)));
    longest = std::max(longest, p.tokens.size());
    prompts.push_back(std::move(p));
  }
  LOOM_ASSIGN_OR_RETURN(const int32_t end_of_turn, data::EndOfTurnToken(options.chat_template, tokenizer));
  std::vector<std::vector<int32_t>> rows;
  for (const data::MathPrompt& p : prompts) {
    for (int j = 0; j < n; ++j) rows.push_back(p.tokens);
  }
  SamplingOptions sampling = options.sampling;
  sampling.stop_token = end_of_turn;
  sampling.seed = options.sampling.seed + first * static_cast<uint64_t>(n);  // sample (g, j): seed + g·n + j
  Generator generator(model, std::max(1, options.batch), static_cast<int>(longest) + sampling.max_new_tokens);
  const std::vector<std::vector<int32_t>> samples = rows.empty() ? rows : generator.Generate(rows, sampling);

  // Reward-model scores of every sample (the completion as sampled, end-of-turn included).
  std::vector<double> scores;
  if (options.reward_model != nullptr) {
    std::vector<const std::vector<int32_t>*> row_prompts;
    for (const data::MathPrompt& p : prompts) {
      for (int j = 0; j < n; ++j) row_prompts.push_back(&p.tokens);
    }
    const int32_t pad = tokenizer.pad_id() >= 0 ? tokenizer.pad_id() : tokenizer.eos_id();
    scores = options.reward_model->Score(row_prompts, samples, pad);
  }

  RejectionSamplingResult out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    ++out.prompts;
    bool solved = false;
    bool kept_one = false;
    int best = -1;
    std::string best_answer;
    for (int j = 0; j < n; ++j) {
      std::vector<int32_t> ids = samples[i * n + j];
      if (!ids.empty() && ids.back() == end_of_turn) ids.pop_back();
      const std::string answer = tokenizer.Decode(ids);
      const bool correct = data::VerifyMathAnswer(answer, prompts[i].reference) == data::MathVerdict::kCorrect;
      ++out.samples;
      out.correct_samples += correct;
      solved |= correct;
      if (!scores.empty()) {
        if (best < 0 || scores[i * n + j] > scores[i * n + best]) {
          best = j;
          best_answer = answer;
        }
        continue;
      }
      if (!correct) continue;
      // Best: the first correct sample (all correct samples score the same); all: every one.
      if (options.keep == RejectionSamplingOptions::Keep::kAllCorrect || !kept_one) {
        data::Conversation kept = prompts[i].turns;
        kept.push_back({"assistant", answer});
        out.kept.push_back(std::move(kept));
        kept_one = true;
      }
    }
    if (best >= 0) {  // reward model: the prompt's highest-scoring sample
      data::Conversation kept = prompts[i].turns;
      kept.push_back({"assistant", best_answer});
      out.kept.push_back(std::move(kept));
    }
    out.solved_prompts += solved;
  }
  return out;
}

std::string ConversationsToJsonl(const std::vector<data::Conversation>& conversations) {
  std::string out;
  for (const data::Conversation& c : conversations) {
    nlohmann::json messages = nlohmann::json::array();
    for (const data::ChatMessage& m : c) messages.push_back({{"role", m.role}, {"content", m.content}});
    out += nlohmann::json{{"messages", messages}}.dump() + "\n";
  }
  return out;
}

}  // namespace loom::engine
