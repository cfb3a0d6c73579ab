#include "data/verifier.h"

#include "absl/strings/str_cat.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace loom::data {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

struct Number {
  size_t begin = 0, end = 0;  // the span in the text
  std::string canonical;
};

// Canonical value of sign + integer digits + fraction digits: no leading zeros, no trailing
// fraction zeros, no "-0".
std::string Canonical(bool negative, std::string integer, std::string fraction) {
  size_t lead = 0;
  while (lead + 1 < integer.size() && integer[lead] == '0') ++lead;
  integer.erase(0, lead);
  while (!fraction.empty() && fraction.back() == '0') fraction.pop_back();
  std::string out = integer;
  if (!fraction.empty()) out += "." + fraction;
  if (negative && out != "0") out = "-" + out;
  return out;
}

// The number starting at text[i] (a digit, or a sign before one), or nullopt.
std::optional<Number> NumberAt(std::string_view text, size_t i) {
  Number n;
  n.begin = i;
  bool negative = false;
  if (text[i] == '-') {
    const bool operand_before = i > 0 && (std::isalnum(static_cast<unsigned char>(text[i - 1])) ||
                                          text[i - 1] == ')' || text[i - 1] == '.');
    if (operand_before || i + 1 >= text.size() || !IsDigit(text[i + 1])) return std::nullopt;
    negative = true;
    ++i;
  }
  if (i >= text.size() || !IsDigit(text[i])) return std::nullopt;
  std::string integer;
  while (i < text.size()) {
    if (IsDigit(text[i])) {
      integer.push_back(text[i++]);
    } else if (text[i] == ',' && i + 3 < text.size() && IsDigit(text[i + 1]) && IsDigit(text[i + 2]) &&
               IsDigit(text[i + 3]) && (i + 4 >= text.size() || !IsDigit(text[i + 4]))) {
      i += 1;  // a thousands separator: exactly three digits follow
    } else {
      break;
    }
  }
  std::string fraction;
  if (i + 1 < text.size() && text[i] == '.' && IsDigit(text[i + 1])) {
    ++i;
    while (i < text.size() && IsDigit(text[i])) fraction.push_back(text[i++]);
  }
  n.end = i;
  n.canonical = Canonical(negative, std::move(integer), std::move(fraction));
  return n;
}

// Every number in text[from, to), in order.
std::vector<Number> Numbers(std::string_view text, size_t from, size_t to) {
  std::vector<Number> out;
  size_t i = from;
  while (i < to) {
    if (IsDigit(text[i]) || text[i] == '-') {
      if (std::optional<Number> n = NumberAt(text.substr(0, to), i)) {
        i = n->end;
        out.push_back(std::move(*n));
        continue;
      }
    }
    ++i;
  }
  return out;
}

// Position just after the last case-insensitive "answer:", or npos.
size_t AfterLastMarker(std::string_view text) {
  static constexpr std::string_view kMarker = "answer:";
  size_t found = std::string_view::npos;
  for (size_t i = 0; i + kMarker.size() <= text.size(); ++i) {
    bool match = true;
    for (size_t k = 0; k < kMarker.size() && match; ++k) {
      match = std::tolower(static_cast<unsigned char>(text[i + k])) == kMarker[k];
    }
    if (match) found = i + kMarker.size();
  }
  return found;
}

}  // namespace

std::optional<std::string> ExtractFinalNumber(std::string_view text) {
  if (const size_t after = AfterLastMarker(text); after != std::string_view::npos) {
    size_t line_end = text.find('\n', after);
    if (line_end == std::string_view::npos) line_end = text.size();
    std::vector<Number> numbers = Numbers(text, after, line_end);
    if (numbers.empty()) return std::nullopt;
    return numbers.front().canonical;
  }
  std::vector<Number> numbers = Numbers(text, 0, text.size());
  if (numbers.empty()) return std::nullopt;
  return numbers.back().canonical;
}

MathVerdict VerifyMathAnswer(std::string_view text, std::string_view reference) {
  const std::optional<std::string> answer = ExtractFinalNumber(text);
  if (!answer) return MathVerdict::kNoAnswer;
  const std::optional<std::string> expected = ExtractFinalNumber(reference);
  return expected && *answer == *expected ? MathVerdict::kCorrect : MathVerdict::kWrong;
}

const char* MathVerdictName(MathVerdict verdict) {
  switch (verdict) {
    case MathVerdict::kCorrect:
      return "correct";
    case MathVerdict::kWrong:
      return "wrong";
    case MathVerdict::kNoAnswer:
      return "no answer";
  }
  return "?";
}

absl::StatusOr<MathPrompt> SplitMathConversation(const Conversation& conversation, ChatTemplate tmpl,
                                                 const Tokenizer& tokenizer, const std::string& what) {
  auto last = std::find_if(conversation.rbegin(), conversation.rend(),
                           [](const ChatMessage& m) { return m.role == "assistant"; });
  if (last == conversation.rend()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no assistant answer to verify against"));
  }
  if (!ExtractFinalNumber(last->content)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the reference answer holds no number: '", last->content, "'"));
  }
  MathPrompt p;
  p.turns.assign(conversation.begin(), last.base() - 1);
  p.reference = last->content;
  absl::StatusOr<std::vector<int32_t>> tokens = TokenizePrompt(p.turns, tmpl, tokenizer);
  if (!tokens.ok()) return tokens.status();
  p.tokens = *std::move(tokens);
  return p;
}

}  // namespace loom::data
