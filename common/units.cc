#include "common/units.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/strings.h"

namespace loom {
namespace {

struct Unit {
  const char* suffix;
  int64_t multiplier;
};

// Longest suffixes first so "Ki" is not read as "K" + "i".
constexpr Unit kUnits[] = {
    {"Ki", int64_t{1} << 10},
    {"Mi", int64_t{1} << 20},
    {"Gi", int64_t{1} << 30},
    {"Ti", int64_t{1} << 40},
    {"K", 1000},
    {"k", 1000},
    {"M", 1000000},
    {"B", 1000000000},
    {"G", 1000000000},
    {"T", 1000000000000},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

std::string StripUnderscores(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '_' && i > 0 && i + 1 < text.size() && IsDigit(text[i - 1]) && IsDigit(text[i + 1])) {
      continue;
    }
    out.push_back(text[i]);
  }
  return out;
}

absl::Status CountError(std::string_view text, std::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", AbslView(text), "' is not a count: ", AbslView(why),
                   " (write digits with an optional K, M, B, T or Ki, Mi, Gi suffix, e.g. 2M or 64Ki)"));
}

}  // namespace

absl::StatusOr<int64_t> ParseCount(std::string_view raw) {
  const std::string text = StripUnderscores(raw);
  if (text.empty()) return CountError(raw, "it is empty");
  std::string_view body = text;
  int64_t multiplier = 1;
  for (const Unit& unit : kUnits) {
    const std::string_view suffix = unit.suffix;
    if (body.size() > suffix.size() && body.substr(body.size() - suffix.size()) == suffix) {
      multiplier = unit.multiplier;
      body.remove_suffix(suffix.size());
      break;
    }
  }
  bool negative = false;
  if (!body.empty() && (body[0] == '-' || body[0] == '+')) {
    negative = body[0] == '-';
    body.remove_prefix(1);
  }
  // Scientific form without a unit: 1e6, 2.5E3.
  int exponent = 0;
  if (const size_t e = body.find_first_of("eE"); e != std::string_view::npos) {
    if (multiplier != 1) return CountError(raw, "an exponent and a unit together");
    const std::string exp_text(body.substr(e + 1));
    char* end = nullptr;
    const long value = std::strtol(exp_text.c_str(), &end, 10);
    if (exp_text.empty() || *end != '\0' || value < -30 || value > 30) {
      return CountError(raw, "bad exponent");
    }
    exponent = static_cast<int>(value);
    body = body.substr(0, e);
  }
  // Digits, optionally with a fractional part: mantissa = int_digits.frac_digits.
  __int128 mantissa = 0;
  int frac_digits = 0;
  bool seen_point = false, seen_digit = false;
  for (char c : body) {
    if (c == '.' && !seen_point) {
      seen_point = true;
      continue;
    }
    if (c < '0' || c > '9')
      return CountError(raw, absl::StrCat("unexpected character '", std::string(1, c), "'"));
    seen_digit = true;
    mantissa = mantissa * 10 + (c - '0');
    if (seen_point) ++frac_digits;
    if (mantissa > (static_cast<__int128>(1) << 100)) return CountError(raw, "too large");
  }
  if (!seen_digit) return CountError(raw, "no digits");
  __int128 value = mantissa * multiplier;
  int scale = frac_digits - exponent;  // value / 10^scale is the result
  while (scale < 0) {
    value *= 10;
    ++scale;
    if (value > (static_cast<__int128>(1) << 100)) return CountError(raw, "too large");
  }
  __int128 divisor = 1;
  for (int i = 0; i < scale; ++i) divisor *= 10;
  if (value % divisor != 0) return CountError(raw, "it is not a whole number");
  value /= divisor;
  if (value > std::numeric_limits<int64_t>::max()) return CountError(raw, "too large for 64 bits");
  return negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
}

absl::StatusOr<double> ParseReal(std::string_view raw) {
  const std::string text = StripUnderscores(raw);
  if (text.empty()) return absl::InvalidArgumentError("empty where a number was expected");
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) {
    return absl::InvalidArgumentError(absl::StrCat("'", AbslView(raw), "' is not a number"));
  }
  if (!std::isfinite(value)) {
    return absl::InvalidArgumentError(absl::StrCat("'", AbslView(raw), "' is not a finite number"));
  }
  return value;
}

std::string FormatCount(int64_t n) {
  if (n == INT64_MIN) return absl::StrCat(n);
  if (n < 0) return "-" + FormatCount(-n);
  // Candidates, each exact: the plain number, an integer of a decimal or binary unit, and one or
  // two decimals of a decimal unit. The shortest wins; on a tie, the larger unit.
  struct Candidate {
    std::string text;
    int64_t unit;
  };
  std::vector<Candidate> candidates = {{absl::StrCat(n), 1}};
  for (const Unit& u : kUnits) {
    const std::string_view suffix = u.suffix;
    if (suffix == "k" || suffix == "G") continue;  // K and B spell these
    if (n < u.multiplier) continue;
    if (n % u.multiplier == 0) {
      candidates.push_back({absl::StrCat(n / u.multiplier, u.suffix), u.multiplier});
    } else if (u.suffix[1] == '\0' && u.multiplier >= 1000 && n % (u.multiplier / 100) == 0) {
      const int64_t whole = n / u.multiplier;
      const int64_t hundredths = (n % u.multiplier) / (u.multiplier / 100);
      candidates.push_back({hundredths % 10 == 0
                                ? absl::StrFormat("%d.%d%s", whole, hundredths / 10, u.suffix)
                                : absl::StrFormat("%d.%02d%s", whole, hundredths, u.suffix),
                            u.multiplier});
    }
  }
  const Candidate* best = &candidates[0];
  for (const Candidate& c : candidates) {
    if (c.text.size() < best->text.size() || (c.text.size() == best->text.size() && c.unit > best->unit)) {
      best = &c;
    }
  }
  return best->text;
}

}  // namespace loom
