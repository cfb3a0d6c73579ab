// The math verifier: the final number of a model's answer, extracted and compared exactly with
// the reference answer. It scores rejection-sampling candidates, online-DPO pairs, RL rewards and
// the math accuracy of `eval` stages, so its rules are fixed and tested on a table
// (tests/unit/data/verifier_test.cc):
//
//   * The answer is the first number after the last "Answer:" (case-insensitive) when the text
//     has that marker — Loom's math data ends every solution with "Answer: N" — and the last
//     number anywhere in the text otherwise.
//   * A marker followed by no number on its line is a malformed answer (no answer), not a
//     fallback to earlier numbers: the model committed to an answer and gave none.
//   * Numbers: optional '-' sign (only where it cannot be a minus between operands, as in
//     "12-5"), digits with optional thousands separators ("1,234"), an optional fraction
//     ("42.0", "3.50"). They compare by value: "042" = "42", "42.0" = "42", "-0" = "0".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/chat.h"
#include "data/tokenizer.h"

namespace loom::data {

// The canonical form of the extracted number ("-17", "3.5"), or nullopt when there is none.
std::optional<std::string> ExtractFinalNumber(std::string_view text);

enum class MathVerdict { kCorrect, kWrong, kNoAnswer };

// Compares the answer in `text` with `reference` (itself a number, e.g. "42" or "-3.5").
MathVerdict VerifyMathAnswer(std::string_view text, std::string_view reference);

// "correct", "wrong" or "no answer".
const char* MathVerdictName(MathVerdict verdict);

// A math problem held as a conversation (eval, rejection sampling, rl, online dpo): the turns
// before its last assistant turn are the prompt, that turn is the reference answer.
struct MathPrompt {
  Conversation turns;           // the prompt's turns
  std::vector<int32_t> tokens;  // rendered up to the assistant header (TokenizePrompt)
  std::string reference;        // the reference answer's text; it holds a final number
};
// Errors name `what` (e.g. "math problem 3") when there is no assistant turn or its text holds no
// number to verify against.
absl::StatusOr<MathPrompt> SplitMathConversation(const Conversation& conversation, ChatTemplate tmpl,
                                                 const Tokenizer& tokenizer, const std::string& what);

}  // namespace loom::data
