#include "data/byte_level_pretokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>
#include <unicode/utext.h>

#include <climits>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace loom::data::internal {
namespace {

class IcuPreTokenizer : public PreTokenizer {
 public:
  explicit IcuPreTokenizer(std::unique_ptr<icu::RegexPattern> pattern) : pattern_(std::move(pattern)) {}

  std::vector<std::string_view> Split(std::string_view text) const override {
    std::vector<std::string_view> pieces;
    if (text.empty()) return pieces;
    UErrorCode status = U_ZERO_ERROR;
    // A UTF-8 UText: the matcher's native indices are byte offsets into `text`.
    UText* ut = utext_openUTF8(nullptr, text.data(), static_cast<int64_t>(text.size()), &status);
    // RegexPattern is immutable and shared; each call has a matcher of its own (thread safety).
    std::unique_ptr<icu::RegexMatcher> m(pattern_->matcher(status));
    size_t done = 0;
    if (U_SUCCESS(status)) {
      m->reset(ut);
      while (m->find(status) && U_SUCCESS(status)) {
        const size_t start = static_cast<size_t>(m->start64(status));
        const size_t end = static_cast<size_t>(m->end64(status));
        if (U_FAILURE(status) || end <= start || start < done || end > text.size()) break;
        if (start > done) pieces.push_back(text.substr(done, start - done));
        pieces.push_back(text.substr(start, end - start));
        done = end;
      }
    }
    // Whatever is left (nothing, for the accepted patterns on valid UTF-8) is one more piece.
    if (done < text.size()) pieces.push_back(text.substr(done));
    m.reset();
    utext_close(ut);
    return pieces;
  }

 private:
  std::unique_ptr<icu::RegexPattern> pattern_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::string& pattern,
                                                                   const std::string& field) {
  if (pattern != kGpt2Pattern && pattern != kLlama3Pattern && pattern != kQwen2Pattern) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": the pattern ", pattern.substr(0, 200),
                                                   " is not one Loom supports: use the GPT-2, Llama-3 or "
                                                   "Qwen2 pattern (data/byte_level_pretokenizer.h)"));
  }
  UErrorCode status = U_ZERO_ERROR;
  UParseError parse_error;
  std::unique_ptr<icu::RegexPattern> compiled(
      icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), 0, parse_error, status));
  if (U_FAILURE(status) || compiled == nullptr) {
    return absl::InternalError(
        absl::StrCat(field, ": ICU cannot compile ", pattern, ": ", u_errorName(status)));
  }
  return std::unique_ptr<PreTokenizer>(new IcuPreTokenizer(std::move(compiled)));
}

std::string NormalizeNfc(std::string_view text) {
  // Fetched once, under C++'s guarded static initialisation (ICU's own lazy init is not visible
  // to ThreadSanitizer, which then reports the first concurrent calls as a race).
  static const icu::Normalizer2* const nfc = [] {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* instance = icu::Normalizer2::getNFCInstance(status);
    return U_SUCCESS(status) ? instance : nullptr;
  }();
  if (nfc == nullptr || text.size() > INT32_MAX) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  if (nfc->isNormalized(in, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = nfc->normalize(in, status);
  if (U_FAILURE(status)) return std::string(text);
  std::string result;
  out.toUTF8String(result);
  return result;
}

}  // namespace loom::data::internal
