// Where a `loom data prepare` directory keeps its tokenizer. Header-only and standard C++ only, so
// that the coordinator's plan checks can use it without linking data/.
#pragma once

#include <filesystem>
#include <string>

namespace loom::data {

inline constexpr char kSentencePieceFile[] = "tokenizer.model";        // the default: SentencePiece
inline constexpr char kHuggingFaceTokenizerFile[] = "tokenizer.json";  // prepared with --tokenizer X.json

// <dir>/tokenizer.model when it exists, else <dir>/tokenizer.json when that exists, else
// <dir>/tokenizer.model (so a missing tokenizer is reported under its default name).
inline std::string DefaultTokenizerPath(const std::string& dir) {
  const std::filesystem::path base(dir);
  std::error_code ec;
  if (!std::filesystem::exists(base / kSentencePieceFile, ec) &&
      std::filesystem::exists(base / kHuggingFaceTokenizerFile, ec)) {
    return (base / kHuggingFaceTokenizerFile).string();
  }
  return (base / kSentencePieceFile).string();
}

}  // namespace loom::data
