// `loom data prepare`: corpus -> cleaned, deduplicated, decontaminated documents -> tokenizer ->
// token shards. Deterministic for a given corpus, options and seed.
//
// Output directory:
//   tokenizer.model, tokenizer.vocab   the SentencePiece model (trained, or the one given), or
//   tokenizer.json                     the Hugging Face byte-level BPE given with --tokenizer
//                                      (DefaultTokenizerPath finds whichever is there)
//   <source>/<split>/shard-*.bin       text sources: documents + EOS as token shards (data/shard.h)
//   <source>/<split>.jsonl             chat and preference sources: the cleaned JSONL lines (rendered
//                                      with a chat template at training time, data/chat.h)
//   prepare.json                       tokenizer file, kind, hash and vocab; per source/split
//                                      documents, tokens and shards; the per-filter removal
//                                      counts; the options
// Order of the steps, per document: normalise; quality filters (UTF-8, length, character class);
// exact dedup (held-out splits first, so a training copy of an evaluation document is the one
// removed); then for training splits n-gram decontamination against every held-out split, and
// MinHash near-dedup (text sources).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/clean.h"

namespace loom::data {

inline constexpr char kFilterMalformed[] = "malformed";

struct PrepareOptions {
  std::string corpus_dir;
  std::string out_dir;
  // Sources to prepare; empty: all of the corpus.
  std::vector<std::string> sources;
  int vocab_size = 8000;
  int threads = 0;  // 0: all cores
  uint64_t seed = 1;
  // Bytes of training text sampled (round-robin over sources) to train the tokenizer.
  int64_t tokenizer_sample_bytes = 8 << 20;
  // Use this tokenizer instead of training one: a SentencePiece model (copied to
  // tokenizer.model) or a Hugging Face tokenizer.json (copied to tokenizer.json).
  std::string tokenizer;
  QualityOptions prose;                   // english, multilingual, other text
  QualityOptions code{32, 1 << 20, 0.3};  // code: braces and operators are fine
  QualityOptions math{16, 1 << 20, 0.3};  // math: short, many symbols
  NearDedupOptions near_dedup;
  DecontamOptions decontam;
  int64_t max_tokens_per_shard = int64_t{1} << 26;
};

struct PreparedSplit {
  int64_t docs = 0;
  int64_t tokens = 0;  // text sources
  int shards = 0;
};

struct PrepareResult {
  FilterReport report;
  std::string tokenizer_hash;
  int vocab_size = 0;
  std::map<std::string, PreparedSplit> splits;  // "source/split"
  double encode_seconds = 0;
  int64_t encoded_bytes = 0;
};

// `log` receives progress lines for people (one event a line).
absl::StatusOr<PrepareResult> Prepare(const PrepareOptions& options,
                                      const std::function<void(const std::string&)>& log = nullptr);

}  // namespace loom::data
