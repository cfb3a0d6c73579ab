#include "data/clean.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/hash.h"

namespace loom::data {
namespace {

// Decodes one UTF-8 code point at text[i]; returns its length (0 when invalid).
int DecodeUtf8(std::string_view text, size_t i, uint32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  int n;
  uint32_t min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, *cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, *cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, *cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (int k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    *cp = (*cp << 6) | (b(i + k) & 0x3F);
  }
  if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
  return n;
}

bool IsSpace(uint32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == 0xA0 || cp == 0x3000;
}

// Letters of any script count; general punctuation, symbols, arrows, box drawing, dingbats,
// private use and emoji do not.
bool IsLetterOrDigit(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
  if (cp < 0xC0) return false;                     // Latin-1 punctuation and symbols
  if (cp == 0xD7 || cp == 0xF7) return false;      // × ÷
  if (cp >= 0x2000 && cp <= 0x2BFF) return false;  // punctuation, symbols, arrows, shapes
  if (cp >= 0x3000 && cp <= 0x303F) return false;  // CJK punctuation
  if (cp >= 0xE000 && cp <= 0xF8FF) return false;  // private use
  if (cp >= 0xFE00 && cp <= 0xFE0F) return false;  // variation selectors
  if (cp >= 0x1F000) return false;                 // emoji and pictographs
  return true;
}

}  // namespace

bool IsValidUtf8(std::string_view text) {
  uint32_t cp;
  for (size_t i = 0; i < text.size();) {
    const int n = DecodeUtf8(text, i, &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string NormalizeText(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  int newlines = 0;  // consecutive newlines just written
  for (size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\r') {
      if (i + 1 < text.size() && text[i + 1] == '\n') continue;
      c = '\n';
    }
    if (c == '\n') {
      while (!out.empty() && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
      if (out.empty()) continue;  // leading blank lines
      if (++newlines <= 2) out.push_back('\n');
      continue;
    }
    if ((c < 0x20 && c != '\t') || c == 0x7F) continue;
    if (out.empty() && (c == ' ' || c == '\t')) continue;  // leading blank space of the document
    newlines = 0;
    out.push_back(static_cast<char>(c));
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == '\t' || out.back() == '\n')) out.pop_back();
  return out;
}

std::string_view QualityFilter(std::string_view normalized, const QualityOptions& options) {
  if (!IsValidUtf8(normalized)) return kFilterInvalidUtf8;
  if (static_cast<int64_t>(normalized.size()) < options.min_chars) return kFilterTooShort;
  if (static_cast<int64_t>(normalized.size()) > options.max_chars) return kFilterTooLong;
  int64_t visible = 0, alnum = 0;
  uint32_t cp;
  for (size_t i = 0; i < normalized.size();) {
    i += DecodeUtf8(normalized, i, &cp);
    if (IsSpace(cp)) continue;
    ++visible;
    alnum += IsLetterOrDigit(cp);
  }
  if (visible == 0 ||
      static_cast<double>(alnum) < options.min_alnum_fraction * static_cast<double>(visible)) {
    return kFilterCharClass;
  }
  return "";
}

std::vector<std::string> NormalizedWords(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (size_t i = 0; i <= text.size(); ++i) {
    const char c = i < text.size() ? text[i] : ' ';
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else if (u >= 0x80 || std::isalnum(u)) {
      word.push_back(static_cast<char>(u < 0x80 ? std::tolower(u) : u));
    }
  }
  return words;
}

bool ExactDeduper::Insert(std::string_view text) {
  return seen_.insert(Key{Hash64(text, 0x51), Hash64(text, 0xA7)}).second;
}

// ---------------------------------------------------------------- MinHash + LSH

NearDeduper::NearDeduper(const NearDedupOptions& options) : options_(options) {
  const int perms = options.bands * options.rows;
  SplitMix64 rng(Mix64(options.seed ^ 0x4D696E48617368ull));
  for (int i = 0; i < perms; ++i) {
    multipliers_.push_back(rng.Next() | 1);  // odd: a bijection of 64-bit values
    offsets_.push_back(rng.Next());
  }
  buckets_.resize(options.bands);
}

std::vector<uint32_t> NearDeduper::Signature(std::string_view text) const {
  const std::vector<std::string> words = NormalizedWords(text);
  const int k = options_.shingle_words;
  std::vector<uint64_t> shingles;
  if (static_cast<int>(words.size()) <= k) {
    std::string all;
    for (const std::string& w : words) absl::StrAppend(&all, w, " ");
    shingles.push_back(Hash64(all));
  } else {
    for (size_t i = 0; i + k <= words.size(); ++i) {
      uint64_t h = 0;
      for (int j = 0; j < k; ++j) h = Mix64(h ^ Hash64(words[i + j]));
      shingles.push_back(h);
    }
    std::sort(shingles.begin(), shingles.end());
    shingles.erase(std::unique(shingles.begin(), shingles.end()), shingles.end());
  }
  // Permutation i: x -> a_i x + b_i (mod 2^64), keeping the top 32 bits (multiply-shift hashing).
  std::vector<uint32_t> signature(multipliers_.size(), UINT32_MAX);
  for (uint64_t s : shingles) {
    for (size_t i = 0; i < multipliers_.size(); ++i) {
      const uint32_t v = static_cast<uint32_t>((multipliers_[i] * s + offsets_[i]) >> 32);
      signature[i] = std::min(signature[i], v);
    }
  }
  return signature;
}

double NearDeduper::EstimatedJaccard(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0.0 : static_cast<double>(same) / static_cast<double>(a.size());
}

bool NearDeduper::Insert(std::string_view text) {
  std::vector<uint32_t> signature = Signature(text);
  std::vector<uint64_t> keys(options_.bands);
  for (int band = 0; band < options_.bands; ++band) {
    uint64_t h = Mix64(static_cast<uint64_t>(band));
    for (int r = 0; r < options_.rows; ++r) h = Mix64(h ^ signature[band * options_.rows + r]);
    keys[band] = h;
    auto it = buckets_[band].find(h);
    if (it == buckets_[band].end()) continue;
    for (uint32_t candidate : it->second) {
      if (EstimatedJaccard(signature, kept_[candidate]) >= options_.threshold) return false;
    }
  }
  const uint32_t id = static_cast<uint32_t>(kept_.size());
  kept_.push_back(std::move(signature));
  for (int band = 0; band < options_.bands; ++band) buckets_[band][keys[band]].push_back(id);
  return true;
}

// ---------------------------------------------------------------- decontamination

namespace {
uint64_t WindowHash(const std::vector<std::string>& words, size_t begin, size_t length) {
  uint64_t h = Mix64(length);
  for (size_t j = 0; j < length; ++j) h = Mix64(h ^ Hash64(words[begin + j]));
  return h;
}
}  // namespace

void Decontaminator::AddEval(std::string_view text) {
  const std::vector<std::string> words = NormalizedWords(text);
  const size_t n = static_cast<size_t>(options_.ngram);
  if (words.size() < n) {
    if (static_cast<int>(words.size()) < options_.min_words) return;
    ngrams_.emplace(WindowHash(words, 0, words.size()), 0);
    lengths_[static_cast<int>(words.size())] = true;
    return;
  }
  for (size_t i = 0; i + n <= words.size(); ++i) ngrams_.emplace(WindowHash(words, i, n), 0);
  lengths_[options_.ngram] = true;
}

std::vector<uint64_t> Decontaminator::Matches(std::string_view text, bool first_only) const {
  std::vector<uint64_t> out;
  if (ngrams_.empty()) return out;
  const std::vector<std::string> words = NormalizedWords(text);
  for (const auto& [length, unused] : lengths_) {
    const size_t n = static_cast<size_t>(length);
    for (size_t i = 0; i + n <= words.size(); ++i) {
      const uint64_t h = WindowHash(words, i, n);
      if (!ngrams_.contains(h)) continue;
      out.push_back(h);
      if (first_only) return out;
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void Decontaminator::CountTraining(std::string_view text) {
  for (uint64_t h : Matches(text, false)) ++ngrams_[h];
}

size_t Decontaminator::DropBoilerplate() {
  return std::erase_if(ngrams_, [&](const auto& entry) { return entry.second > options_.max_train_docs; });
}

bool Decontaminator::Contaminated(std::string_view text) const { return !Matches(text, true).empty(); }

// ---------------------------------------------------------------- report

std::string FilterReport::Format() const {
  const std::vector<std::string> filters = {"malformed",    kFilterInvalidUtf8, kFilterTooShort,
                                            kFilterTooLong, kFilterCharClass,   kFilterExactDup,
                                            kFilterNearDup, kFilterDecontam};
  std::string out = absl::StrFormat("%-24s %9s", "source/split", "input");
  for (const std::string& f : filters)
    absl::StrAppendFormat(&out, " %*s", static_cast<int>(std::max<size_t>(f.size(), 6)), f);
  absl::StrAppendFormat(&out, " %9s\n", "kept");
  for (const auto& [name, c] : by_source) {
    absl::StrAppendFormat(&out, "%-24s %9d", name, c.input);
    for (const std::string& f : filters) {
      auto it = c.removed.find(f);
      absl::StrAppendFormat(&out, " %*d", static_cast<int>(std::max<size_t>(f.size(), 6)),
                            it == c.removed.end() ? 0 : it->second);
    }
    absl::StrAppendFormat(&out, " %9d\n", c.kept);
  }
  return out;
}

}  // namespace loom::data
