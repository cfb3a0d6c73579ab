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

// How hard the generated problems are. kGradeSchool: one or two operations on numbers up to four
// digits, and word problems. kSmallSums: a two-digit number plus or minus one digit, bare or in a
// sentence, worked digit by digit ("7 + 5 = 12", "40 + 12 = 52"): every step is one of a few
// hundred small facts, so a tiny model that has learnt them answers problems it never saw
// (held-out accuracy well above 0, which post-training can then be seen to raise).
enum class MathLevel { kGradeSchool, kSmallSums };

struct MathProblem {
  std::string question;
  std::string solution;  // steps, then "Answer: N"
  int64_t answer = 0;
  uint64_t seed = 0;  // regenerates the same operands (WrongSolution)
  MathLevel level = MathLevel::kGradeSchool;
};

// A problem of `level` from a few templates, seeded by `rng`.
MathProblem GenerateMathProblem(SplitMix64& rng, MathLevel level = MathLevel::kGradeSchool);

// A solution of `problem` with a wrong final answer: one step off by a small amount, carried
// through (CheckSolution rejects it); for kSmallSums also one with the digit misread or the
// operation swapped (its arithmetic checks, but it answers another question).
std::string WrongSolution(const MathProblem& problem, SplitMix64& rng);

// Evaluates an integer expression with + - * / (exact division only) and parentheses.
absl::StatusOr<int64_t> EvaluateExpression(std::string_view expression);

// Checks every "expr = value" line and returns the value of the final "Answer: N" line.
absl::StatusOr<int64_t> CheckSolution(std::string_view solution);

}  // namespace loom::data
