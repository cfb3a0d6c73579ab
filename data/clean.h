// Cleaning, deduplication and decontamination of documents (the steps of `loom data prepare`
// before tokenisation). Each step is a small object so that prepare can run them in order per
// source and count what each removed; all are deterministic.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace loom::data {

// Names of the filters, as they appear in reports.
inline constexpr char kFilterInvalidUtf8[] = "invalid_utf8";
inline constexpr char kFilterTooShort[] = "too_short";
inline constexpr char kFilterTooLong[] = "too_long";
inline constexpr char kFilterCharClass[] = "char_class";
inline constexpr char kFilterExactDup[] = "exact_dup";
inline constexpr char kFilterNearDup[] = "near_dup";
inline constexpr char kFilterDecontam[] = "decontaminated";

bool IsValidUtf8(std::string_view text);

// Normalisation: CR LF and lone CR become LF; control characters other than LF and TAB are
// removed; trailing spaces and tabs of each line are removed; runs of more than two newlines
// become two; leading and trailing blank space of the document is removed. Leading indentation
// is kept (code). Unicode normalisation (NFC) is not applied: Debian's C++ toolchain offers it
// only through ICU, which Loom does not depend on. Input must be valid UTF-8.
std::string NormalizeText(std::string_view text);

struct QualityOptions {
  int64_t min_chars = 32;       // after normalisation, in bytes
  int64_t max_chars = 1 << 20;  // in bytes
  // Letters and digits among non-space characters (non-ASCII letters count as letters; symbols,
  // punctuation and emoji do not). Prose is mostly letters; code and math are given less.
  double min_alnum_fraction = 0.6;
};

// The filter that rejects `normalized` (one of the names above), or "" when it passes.
std::string_view QualityFilter(std::string_view normalized, const QualityOptions& options);

// Lower-cased ASCII words with punctuation removed: the units of shingles and n-grams.
std::vector<std::string> NormalizedWords(std::string_view text);

// Exact duplicates: a 128-bit hash of the normalised text.
class ExactDeduper {
 public:
  // True when `text` was not seen before (and remembers it).
  bool Insert(std::string_view text);

 private:
  struct Key {
    uint64_t a, b;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return k.a ^ (k.b * 0x9E3779B97F4A7C15ull); }
  };
  std::unordered_set<Key, KeyHash> seen_;
};

struct NearDedupOptions {
  int shingle_words = 5;   // words per shingle
  int bands = 20;          // LSH bands
  int rows = 6;            // signature rows per band (bands x rows MinHash permutations)
  double threshold = 0.7;  // estimated Jaccard similarity at or above which a document is a duplicate
  uint64_t seed = 1;
};

// MinHash signatures with LSH banding: a document is a near duplicate when it shares a band with
// a kept document whose signatures agree in at least `threshold` of the positions. With the
// defaults a pair at Jaccard 0.8 becomes a candidate with probability 0.998, at 0.5 with 0.27
// (and is then rejected by the signature check).
class NearDeduper {
 public:
  explicit NearDeduper(const NearDedupOptions& options);
  // True when `text` is kept (no near duplicate among the kept documents; it is remembered).
  bool Insert(std::string_view text);
  // The MinHash signature of a text (bands x rows values).
  std::vector<uint32_t> Signature(std::string_view text) const;
  static double EstimatedJaccard(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b);

 private:
  NearDedupOptions options_;
  std::vector<uint64_t> multipliers_, offsets_;
  std::vector<std::vector<uint32_t>> kept_;
  std::vector<std::unordered_map<uint64_t, std::vector<uint32_t>>> buckets_;  // per band
};

struct DecontamOptions {
  int ngram = 13;  // words per n-gram (GPT-3's choice)
  // Evaluation documents shorter than `ngram` words contribute their whole word sequence when it
  // has at least this many words (short math problems); shorter ones are left to exact dedup.
  int min_words = 8;
  // An evaluation n-gram found in more than this many training documents is boilerplate (a
  // licence header, a prompt template), not a leaked evaluation item, and is ignored. Applies
  // when the training documents were counted (CountTraining + DropBoilerplate).
  int max_train_docs = 10;
};

// N-gram decontamination: a training document is contaminated when it contains any n-gram of
// the evaluation documents (the held-out splits).
class Decontaminator {
 public:
  explicit Decontaminator(const DecontamOptions& options) : options_(options) {}
  void AddEval(std::string_view text);
  // Optional first pass over the training documents: counts, per evaluation n-gram, the
  // documents that contain it. DropBoilerplate then forgets those above max_train_docs and
  // returns how many it dropped.
  void CountTraining(std::string_view text);
  size_t DropBoilerplate();
  bool Contaminated(std::string_view text) const;
  size_t ngrams() const { return ngrams_.size(); }

 private:
  // The distinct evaluation n-grams that `text` contains.
  std::vector<uint64_t> Matches(std::string_view text, bool first_only) const;
  DecontamOptions options_;
  std::unordered_map<uint64_t, int64_t> ngrams_;  // n-gram hash -> training documents containing it
  std::map<int, bool> lengths_;                   // window lengths in words that have entries
};

// What the filters removed, per source and split.
struct FilterReport {
  struct Counts {
    int64_t input = 0;
    int64_t kept = 0;
    std::map<std::string, int64_t> removed;  // filter name -> documents
  };
  std::map<std::string, Counts> by_source;  // key "source/split"
  // A table for people: one row per source/split, one column per filter.
  std::string Format() const;
};

}  // namespace loom::data
