// Private to data/: the pre-tokenizer of Hugging Face byte-level BPE tokenizers. Text is cut into
// pieces by a regex before BPE runs on each piece, so merges never cross a piece boundary.
//
// Only the patterns of the tokenizers Loom is tested against are accepted (their regex dialect
// is Oniguruma's; ICU's agrees with it on these three, and tests/unit/data/bpe_reference_test.py
// checks that against Python's `regex`):
//   GPT-2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (also what ByteLevel{use_regex: true} means)
//   Llama-3 (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2   the Llama-3 pattern with \p{N} (one digit) for \p{N}{1,3}
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::data::internal {

inline constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

class PreTokenizer {
 public:
  // Compiles one of the patterns above; any other pattern is refused (the error names `field`).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::string& pattern,
                                                              const std::string& field);
  virtual ~PreTokenizer() = default;
  // Cuts `text` into consecutive pieces that cover it exactly (matches, and the text between
  // matches: Hugging Face's "Isolated" split). Thread-safe. Bytes that are not UTF-8 stay in
  // some piece (ICU reads them as U+FFFD), never dropped.
  virtual std::vector<std::string_view> Split(std::string_view text) const = 0;
};

// Hugging Face's NFC normalizer: `text` in Unicode normalisation form C (invalid UTF-8 becomes
// U+FFFD). Thread-safe.
std::string NormalizeNfc(std::string_view text);

}  // namespace loom::data::internal
