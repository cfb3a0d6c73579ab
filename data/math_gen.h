// Generated math data with verified answers: the `math`, `sft_math` and `prefs_math` sources.
//
// A problem has a question and a worked solution: one line per step, each an integer equation
// such as "7 * 3 = 21", then "Answer: N". CheckSolution re-evaluates every step with its own
// expression parser, so an answer is accepted only if each step and the final line agree.
// Preference pairs take a rejected solution with one step miscomputed (and the error carried
// through), which CheckSolution must reject and whose answer must differ.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "data/hash.h"

namespace loom::data {

struct MathProblem {
  std::string question;
  std::string solution;  // steps, then "Answer: N"
  int64_t answer = 0;
  uint64_t seed = 0;  // regenerates the same operands (WrongSolution)
};

// Arithmetic (one or two operations) or a word problem from a few templates, seeded by `rng`.
MathProblem GenerateMathProblem(SplitMix64& rng);

// A solution of `problem` with one step off by a small amount, carried through to a wrong answer.
std::string WrongSolution(const MathProblem& problem, SplitMix64& rng);

// Evaluates an integer expression with + - * / (exact division only) and parentheses.
absl::StatusOr<int64_t> EvaluateExpression(std::string_view expression);

// Checks every "expr = value" line and returns the value of the final "Answer: N" line.
absl::StatusOr<int64_t> CheckSolution(std::string_view solution);

}  // namespace loom::data
