#include "worker/engine/evaluation/math_eval.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "data/verifier.h"
#include "worker/engine/model/generator.h"

namespace loom::engine {

absl::StatusOr<MathEvalResult> EvaluateMathAccuracy(const Transformer& model, const data::Tokenizer& tokenizer,
                                                    const std::vector<data::Conversation>& problems,
                                                    const MathEvalOptions& options) {
  struct Problem {
    std::vector<int32_t> prompt;
    std::string prompt_text, reference;
  };
  const size_t count = options.max_problems > 0
                           ? std::min(problems.size(), static_cast<size_t>(options.max_problems))
                           : problems.size();
  std::vector<Problem> todo;
  for (size_t i = 0; i < count; ++i) {
    LOOM_ASSIGN_OR_RETURN(data::MathPrompt split,
                          data::SplitMathConversation(problems[i], options.chat_template, tokenizer,
                                                      absl::StrCat("math problem ", i + 1)));
    Problem p;
    p.prompt = std::move(split.tokens);
    p.reference = std::move(split.reference);
    for (const data::ChatMessage& m : split.turns) absl::StrAppend(&p.prompt_text, m.content);
    todo.push_back(std::move(p));
  }
  LOOM_ASSIGN_OR_RETURN(const int32_t end_of_turn, data::EndOfTurnToken(options.chat_template, tokenizer));

  MathEvalResult result;
  const int batch = std::max(1, options.batch);
  size_t longest = 0;
  for (const Problem& p : todo) longest = std::max(longest, p.prompt.size());
  Generator generator(model, batch, static_cast<int>(longest) + options.max_new_tokens);
  SamplingOptions sampling;
  sampling.temperature = 0;  // greedy
  sampling.max_new_tokens = options.max_new_tokens;
  sampling.stop_token = end_of_turn;
  for (size_t first = 0; first < todo.size(); first += batch) {
    const size_t last = std::min(todo.size(), first + batch);
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = first; i < last; ++i) prompts.push_back(todo[i].prompt);
    const std::vector<std::vector<int32_t>> answers = generator.Generate(prompts, sampling);
    for (size_t i = first; i < last; ++i) {
      std::vector<int32_t> ids = answers[i - first];
      if (!ids.empty() && ids.back() == end_of_turn) ids.pop_back();
      const std::string answer = tokenizer.Decode(ids);
      const data::MathVerdict verdict = data::VerifyMathAnswer(answer, todo[i].reference);
      ++result.problems;
      result.correct += verdict == data::MathVerdict::kCorrect;
      result.no_answer += verdict == data::MathVerdict::kNoAnswer;
      if (static_cast<int>(result.samples.size()) < options.keep_samples) {
        result.samples.push_back({todo[i].prompt_text, answer, todo[i].reference, data::MathVerdictName(verdict)});
      }
    }
  }
  return result;
}

}  // namespace loom::engine
