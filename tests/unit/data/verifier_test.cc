// The math verifier on a table of right, wrong and malformed answers (data/verifier.h).
#include "data/verifier.h"

#include <gtest/gtest.h>

namespace loom::data {
namespace {

struct Case {
  const char* text;
  const char* reference;
  MathVerdict verdict;
  const char* extracted;  // nullptr: none
};

class VerifierTable : public ::testing::TestWithParam<Case> {};

TEST_P(VerifierTable, ExtractsAndCompares) {
  const Case& c = GetParam();
  const std::optional<std::string> got = ExtractFinalNumber(c.text);
  if (c.extracted == nullptr) {
    EXPECT_FALSE(got.has_value()) << "extracted " << *got;
  } else {
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(*got, c.extracted);
  }
  EXPECT_EQ(MathVerdictName(VerifyMathAnswer(c.text, c.reference)), std::string(MathVerdictName(c.verdict)));
}

INSTANTIATE_TEST_SUITE_P(
    Answers, VerifierTable,
    ::testing::Values(
        // Right.
        Case{"Answer: 42", "42", MathVerdict::kCorrect, "42"},
        Case{"6 * 7 = 42\nAnswer: 42", "42", MathVerdict::kCorrect, "42"},
        Case{"12 * 3 = 36\n5 + 36 = 41\nAnswer: 41<|im_end|>", "41", MathVerdict::kCorrect, "41"},
        Case{"answer: 42 apples.", "42", MathVerdict::kCorrect, "42"},
        Case{"ANSWER:   -17", "-17", MathVerdict::kCorrect, "-17"},
        Case{"Answer: 1,234", "1234", MathVerdict::kCorrect, "1234"},
        Case{"Answer: 042.50", "42.5", MathVerdict::kCorrect, "42.5"},
        Case{"Answer: 42.0", "42", MathVerdict::kCorrect, "42"},
        Case{"Answer: -0", "0", MathVerdict::kCorrect, "0"},
        Case{"The total is 3 + 4 = 7.", "7", MathVerdict::kCorrect, "7"},
        Case{"Answer: 3\nthen I wrote 99", "3", MathVerdict::kCorrect, "3"},
        Case{"Answer: 5 wait no\nAnswer: 6", "6", MathVerdict::kCorrect, "6"},
        Case{"Answer: 123456789012345678901234567890", "123456789012345678901234567890",
             MathVerdict::kCorrect, "123456789012345678901234567890"},
        // Wrong.
        Case{"Answer: 41", "42", MathVerdict::kWrong, "41"},
        Case{"Answer: 420", "42", MathVerdict::kWrong, "420"},
        Case{"Answer: 4.2", "42", MathVerdict::kWrong, "4.2"},
        Case{"Answer: 17", "-17", MathVerdict::kWrong, "17"},
        Case{"12-5", "-5", MathVerdict::kWrong, "5"},  // a minus between operands is no sign
        Case{"Answer: 1,23", "123", MathVerdict::kWrong, "1"},  // not a thousands separator
        Case{"Answer: 42", "not a number", MathVerdict::kWrong, "42"},
        // Malformed: no answer.
        Case{"", "42", MathVerdict::kNoAnswer, nullptr},
        Case{"I do not know.", "42", MathVerdict::kNoAnswer, nullptr},
        Case{"6 * 7 = 42\nAnswer: forty-two", "42", MathVerdict::kNoAnswer, nullptr},
        Case{"6 * 7 = 42\nAnswer:\n42", "42", MathVerdict::kNoAnswer, nullptr},
        Case{"Answer: -", "0", MathVerdict::kNoAnswer, nullptr}));

}  // namespace
}  // namespace loom::data
