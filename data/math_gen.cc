#include "data/math_gen.h"

#include <cctype>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/strings.h"

namespace loom::data {
namespace {

constexpr const char* kNames[] = {"Alice", "Bilal", "Chen", "Dana",  "Emeka", "Farah",  "Goran", "Hana",
                                  "Ivan",  "Jonas", "Kofi", "Lena",  "Mateo", "Nora",   "Omar",  "Priya",
                                  "Quinn", "Rosa",  "Sven", "Tariq", "Uma",   "Viktor", "Wen",   "Yusuf"};
constexpr const char* kItems[] = {"apple",  "marble", "pencil", "sticker", "book",   "coin",
                                  "shell",  "card",   "stamp",  "button",  "ribbon", "cookie",
                                  "bottle", "brick",  "seed",   "ticket"};

int64_t Between(SplitMix64& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(rng.Below(hi - lo + 1));
}

template <size_t N>
const char* Pick(SplitMix64& rng, const char* const (&list)[N]) {
  return list[rng.Below(N)];
}

// Steps: each is (left side text, value); the last value is the answer.
struct Step {
  std::string lhs;
  int64_t value;
};

std::string Render(const std::vector<Step>& steps) {
  std::string out;
  for (const Step& s : steps) absl::StrAppend(&out, s.lhs, " = ", s.value, "\n");
  absl::StrAppend(&out, "Answer: ", steps.back().value);
  return out;
}

struct Generated {
  std::string question;
  std::vector<Step> steps;
};

// Each template builds its steps from operands, so WrongSolution can recompute them from a
// perturbed intermediate value. The lambda receives the first step's value (possibly wrong).
Generated Make(SplitMix64& rng, int64_t first_error) {
  const char* name = Pick(rng, kNames);
  const char* item = Pick(rng, kItems);
  switch (rng.Below(6)) {
    case 0: {  // a + b or a - b
      const int64_t a = Between(rng, 10, 9999), b = Between(rng, 10, 9999);
      const bool plus = rng.Below(2) == 0;
      const int64_t x = std::max(a, b), y = std::min(a, b);
      const std::string lhs = plus ? absl::StrCat(a, " + ", b) : absl::StrCat(x, " - ", y);
      return {absl::StrCat("What is ", lhs, "?"), {{lhs, (plus ? a + b : x - y) + first_error}}};
    }
    case 1: {  // a * b
      const int64_t a = Between(rng, 2, 99), b = Between(rng, 2, 999);
      const std::string lhs = absl::StrCat(a, " * ", b);
      return {absl::StrCat("Compute ", lhs, "."), {{lhs, a * b + first_error}}};
    }
    case 2: {  // (a + b) * c
      const int64_t a = Between(rng, 2, 99), b = Between(rng, 2, 99), c = Between(rng, 2, 49);
      const int64_t s = a + b + first_error;
      return {absl::StrCat("Evaluate (", a, " + ", b, ") * ", c, "."),
              {{absl::StrCat(a, " + ", b), s}, {absl::StrCat(s, " * ", c), s * c}}};
    }
    case 3: {  // has a, buys b bags of c
      const int64_t a = Between(rng, 2, 99), b = Between(rng, 2, 29), c = Between(rng, 2, 49);
      const int64_t bc = b * c + first_error;
      return {absl::StrCat(name, " has ", a, " ", item, "s and buys ", b, " bags with ", c, " ", item,
                           "s in each bag. How many ", item, "s does ", name, " have now?"),
              {{absl::StrCat(b, " * ", c), bc}, {absl::StrCat(a, " + ", bc), a + bc}}};
    }
    case 4: {  // gives b to each of c friends
      const int64_t b = Between(rng, 2, 29), c = Between(rng, 2, 19), a = b * c + Between(rng, 0, 199);
      const int64_t bc = b * c + first_error;
      return {absl::StrCat(name, " had ", a, " ", item, "s and gave ", b, " to each of ", c,
                           " friends. How many ", item, "s did ", name, " keep?"),
              {{absl::StrCat(b, " * ", c), bc}, {absl::StrCat(a, " - ", bc), a - bc}}};
    }
    default: {  // shared equally
      const int64_t k = Between(rng, 2, 29), q = Between(rng, 2, 199), n = k * q;
      return {absl::StrCat(n, " ", item, "s are shared equally among ", k, " children. How many ", item,
                           "s does each child get?"),
              {{absl::StrCat(n, " / ", k), q + first_error}}};
    }
  }
}

// How a rejected solution goes wrong. Grade-school problems only slip (a step off by `amount`,
// carried through); small sums also misread the digit (the step uses another one) or use the
// other operation, mistakes that show against the question without redoing the arithmetic.
struct Mistake {
  enum Kind { kNone, kSlip, kMisread, kWrongOperation } kind = kNone;
  int64_t amount = 0;  // kSlip: added to the step's value; kMisread: 1..8, the digit's shift
};

// kSmallSums: a + b or a - b with a two-digit a and a one-digit b, worked digit by digit as a
// person would: the ones (borrowing ten when needed), then the tens added back.
Generated MakeSmall(SplitMix64& rng, const Mistake& mistake) {
  const char* name = Pick(rng, kNames);
  const char* item = Pick(rng, kItems);
  const int64_t a = Between(rng, 10, 99), b = Between(rng, 1, 9);
  const bool plus = rng.Below(2) == 0;
  const bool bare = rng.Below(2) == 0;
  const std::string question =
      bare ? absl::StrCat("What is ", a, plus ? " + " : " - ", b, "?")
      : plus ? absl::StrCat(name, " has ", a, " ", item, "s and gets ", b, " more. How many ", item, "s does ", name,
                            " have now?")
             : absl::StrCat(name, " has ", a, " ", item, "s and gives ", b, " away. How many ", item, "s does ", name,
                            " have left?");
  const int64_t digit = mistake.kind == Mistake::kMisread ? 1 + (b - 1 + mistake.amount) % 9 : b;
  const bool add = mistake.kind == Mistake::kWrongOperation ? !plus : plus;
  const int64_t slip = mistake.kind == Mistake::kSlip ? mistake.amount : 0;
  int64_t ones = a % 10, tens = a - a % 10;
  if (!add && ones < digit) {  // borrow ten
    ones += 10;
    tens -= 10;
  }
  const int64_t step = (add ? ones + digit : ones - digit) + slip;
  return {question, {{absl::StrCat(ones, add ? " + " : " - ", digit), step}, {absl::StrCat(tens, " + ", step), tens + step}}};
}

Generated MakeAt(MathLevel level, SplitMix64& rng, const Mistake& mistake) {
  return level == MathLevel::kSmallSums ? MakeSmall(rng, mistake) : Make(rng, mistake.amount);
}

// Recursive-descent parser over the expression text.
class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}
  absl::StatusOr<int64_t> Parse() {
    absl::StatusOr<int64_t> v = Sum();
    Skip();
    if (v.ok() && pos_ != text_.size()) return Error("unexpected character");
    return v;
  }

 private:
  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(AbslView(what), " at column ", pos_ + 1, " of '", AbslView(text_), "'"));
  }
  void Skip() {
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
  }
  bool Eat(char c) {
    Skip();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::StatusOr<int64_t> Sum() {
    absl::StatusOr<int64_t> left = Product();
    while (left.ok()) {
      if (Eat('+')) {
        absl::StatusOr<int64_t> r = Product();
        if (!r.ok()) return r;
        *left += *r;
      } else if (Eat('-')) {
        absl::StatusOr<int64_t> r = Product();
        if (!r.ok()) return r;
        *left -= *r;
      } else {
        break;
      }
    }
    return left;
  }
  absl::StatusOr<int64_t> Product() {
    absl::StatusOr<int64_t> left = Atom();
    while (left.ok()) {
      if (Eat('*')) {
        absl::StatusOr<int64_t> r = Atom();
        if (!r.ok()) return r;
        *left *= *r;
      } else if (Eat('/')) {
        absl::StatusOr<int64_t> r = Atom();
        if (!r.ok()) return r;
        if (*r == 0 || *left % *r != 0) return Error("inexact division");
        *left /= *r;
      } else {
        break;
      }
    }
    return left;
  }
  absl::StatusOr<int64_t> Atom() {
    if (Eat('(')) {
      absl::StatusOr<int64_t> v = Sum();
      if (v.ok() && !Eat(')')) return Error("missing ')'");
      return v;
    }
    Skip();
    const bool negative = pos_ < text_.size() && text_[pos_] == '-';
    if (negative) ++pos_;
    const size_t start = pos_;
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    int64_t v;
    if (start == pos_ || pos_ - start > 15 ||
        !absl::SimpleAtoi(AbslView(text_.substr(start, pos_ - start)), &v)) {
      return Error("expected a number");
    }
    return negative ? -v : v;
  }
  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

MathProblem GenerateMathProblem(SplitMix64& rng, MathLevel level) {
  MathProblem p;
  p.seed = rng.Next();
  p.level = level;
  SplitMix64 local(p.seed);
  const Generated g = MakeAt(level, local, Mistake{});
  p.question = g.question;
  p.solution = Render(g.steps);
  p.answer = g.steps.back().value;
  return p;
}

std::string WrongSolution(const MathProblem& problem, SplitMix64& rng) {
  // The same operands (same seed). A slip puts the first step off by 1..9 in either direction and
  // later steps use the wrong value, as a student carrying a slip would.
  Mistake mistake{Mistake::kSlip, Between(rng, 1, 9)};
  if (rng.Below(2) == 0) mistake.amount = -mistake.amount;
  if (problem.level == MathLevel::kSmallSums) {
    const uint64_t kind = rng.Below(3);
    if (kind == 1) mistake = {Mistake::kMisread, Between(rng, 1, 8)};
    if (kind == 2) mistake = {Mistake::kWrongOperation, 0};
  }
  SplitMix64 local(problem.seed);
  return Render(MakeAt(problem.level, local, mistake).steps);
}

absl::StatusOr<int64_t> EvaluateExpression(std::string_view expression) { return Parser(expression).Parse(); }

absl::StatusOr<int64_t> CheckSolution(std::string_view solution) {
  std::vector<absl::string_view> lines = absl::StrSplit(AbslView(solution), '\n', absl::SkipEmpty());
  if (lines.empty()) return absl::InvalidArgumentError("empty solution");
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    std::vector<absl::string_view> sides = absl::StrSplit(lines[i], " = ");
    if (sides.size() != 2)
      return absl::InvalidArgumentError(absl::StrCat("step ", i + 1, " is not 'expression = value'"));
    absl::StatusOr<int64_t> lhs = EvaluateExpression(std::string_view(sides[0].data(), sides[0].size()));
    absl::StatusOr<int64_t> rhs = EvaluateExpression(std::string_view(sides[1].data(), sides[1].size()));
    if (!lhs.ok()) return lhs.status();
    if (!rhs.ok()) return rhs.status();
    if (*lhs != *rhs) {
      return absl::InvalidArgumentError(
          absl::StrCat("step ", i + 1, " '", lines[i], "' is wrong: ", sides[0], " is ", *lhs));
    }
  }
  absl::string_view last = lines.back();
  int64_t answer;
  if (!absl::ConsumePrefix(&last, "Answer: ") || !absl::SimpleAtoi(last, &answer)) {
    return absl::InvalidArgumentError("the last line is not 'Answer: N'");
  }
  if (lines.size() >= 2) {
    std::vector<absl::string_view> sides = absl::StrSplit(lines[lines.size() - 2], " = ");
    int64_t last_value;
    if (!absl::SimpleAtoi(sides.back(), &last_value) || last_value != answer) {
      return absl::InvalidArgumentError(absl::StrCat("the answer ", answer, " is not the last step's value"));
    }
  }
  return answer;
}

}  // namespace loom::data
