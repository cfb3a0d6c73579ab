// Math accuracy by generation: each held-out math conversation's prompt (every turn before the
// last assistant turn, rendered with the chat template up to the assistant header) is continued
// greedily by the model until the end-of-turn token, and the verifier (data/verifier.h) compares
// the final number of the continuation with the final number of the reference answer. Prompts are
// decoded in batches with the KV-cache generator; greedy decoding makes the result a pure
// function of the weights, so two evaluations of one checkpoint agree exactly.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {

struct MathEvalOptions {
  int max_problems = 64;    // the first problems of the set; 0 = all
  int max_new_tokens = 64;  // per answer
  int batch = 16;           // prompts decoded together
  data::ChatTemplate chat_template = data::ChatTemplate::kChatML;
  int keep_samples = 3;     // answers kept in the result, for people to read
};

struct MathEvalResult {
  int problems = 0;
  int correct = 0;
  int no_answer = 0;  // the answer had no number where the verifier looks
  double accuracy() const { return problems > 0 ? static_cast<double>(correct) / problems : 0.0; }
  struct Sample {
    std::string prompt, answer, reference, verdict;
  };
  std::vector<Sample> samples;  // the first keep_samples
};

// Conversations whose last assistant turn holds no number are refused (the set is not math).
absl::StatusOr<MathEvalResult> EvaluateMathAccuracy(const Transformer& model, const data::Tokenizer& tokenizer,
                                                    const std::vector<data::Conversation>& problems,
                                                    const MathEvalOptions& options);

}  // namespace loom::engine
