#include "data/prepare.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "data/chat.h"
#include "data/corpus.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace loom::data {
namespace fs = std::filesystem;
namespace {

using Json = nlohmann::json;

struct Doc {
  std::string line;  // the JSONL line (chat and preference sources)
  std::string text;  // normalised text: what is filtered, hashed and (text sources) tokenised
};

struct Split {
  std::string source;
  std::string split;  // train or heldout
  SourceKind kind;
  std::vector<Doc> docs;
};

// The text of a line that filters and n-grams look at: the text, or every message's content.
absl::StatusOr<std::string> LineText(const std::string& line, SourceKind kind) {
  if (kind == SourceKind::kChat) {
    LOOM_ASSIGN_OR_RETURN(Conversation c, ParseConversation(line));
    // System prompts are shared by design; they would make every conversation a duplicate.
    std::string text;
    for (const ChatMessage& m : c) {
      if (m.role != "system") absl::StrAppend(&text, m.content, "\n");
    }
    return text;
  }
  if (kind == SourceKind::kPreference) {
    LOOM_ASSIGN_OR_RETURN(PreferencePair p, ParsePreference(line));
    std::string text;
    for (const Conversation* c : {&p.prompt, &p.chosen, &p.rejected}) {
      for (const ChatMessage& m : *c) absl::StrAppend(&text, m.content, "\n");
    }
    return text;
  }
  Json j = Json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("text") || !j["text"].is_string()) {
    return absl::InvalidArgumentError("expected {\"text\": \"...\"}");
  }
  return j["text"].get<std::string>();
}

absl::Status ReadSplit(const std::string& corpus_dir, Split* split, FilterReport::Counts* counts) {
  const std::string path = absl::StrCat(corpus_dir, "/", split->source, "/", split->split, ".jsonl");
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path, " (run `loom data corpus` first)"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++counts->input;
    absl::StatusOr<std::string> text = LineText(line, split->kind);
    if (!text.ok()) {
      ++counts->removed[kFilterMalformed];
      continue;
    }
    split->docs.push_back({std::move(line), *std::move(text)});
  }
  return absl::OkStatus();
}

const QualityOptions& QualityFor(const PrepareOptions& o, const Split& s) {
  if (s.source == "code") return o.code;
  if (s.kind != SourceKind::kText || s.source.find("math") != std::string::npos) return o.math;
  return o.prose;
}

// Writes lines of training text (SentencePiece reads one sentence a line), round-robin over
// sources so that a large source does not crowd out the others.
absl::Status WriteTokenizerSample(const std::vector<Split>& splits, int64_t budget, const std::string& path) {
  std::vector<const Split*> train;
  for (const Split& s : splits) {
    if (s.split == "train" && !s.docs.empty()) train.push_back(&s);
  }
  std::string out;
  std::vector<size_t> next(train.size(), 0);
  bool any = true;
  while (any && static_cast<int64_t>(out.size()) < budget) {
    any = false;
    for (size_t i = 0; i < train.size(); ++i) {
      if (next[i] >= train[i]->docs.size()) continue;
      any = true;
      const std::string& text = train[i]->docs[next[i]++].text;
      size_t start = 0;
      while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        const size_t length = std::min<size_t>(end - start, 4000);
        if (length > 0) {
          out.append(text, start, length);
          out.push_back('\n');
        }
        start = end + 1;
      }
    }
  }
  if (out.empty()) return absl::FailedPreconditionError("no training text left to train the tokenizer on");
  return WriteFileDurably(path, out);
}

}  // namespace

absl::StatusOr<PrepareResult> Prepare(const PrepareOptions& o,
                                      const std::function<void(const std::string&)>& log) {
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  if (o.out_dir.empty()) return absl::InvalidArgumentError("prepare: --out is required");
  // A given tokenizer is checked first: a bad file fails in a second, not after the cleaning.
  std::unique_ptr<Tokenizer> given;
  if (!o.tokenizer.empty()) {
    LOOM_ASSIGN_OR_RETURN(given, Tokenizer::Load(o.tokenizer));
  }
  LOOM_ASSIGN_OR_RETURN(std::vector<CorpusSourceInfo> corpus, ReadCorpusManifest(o.corpus_dir));
  std::vector<CorpusSourceInfo> chosen;
  for (const CorpusSourceInfo& info : corpus) {
    if (o.sources.empty() || std::find(o.sources.begin(), o.sources.end(), info.name) != o.sources.end()) {
      chosen.push_back(info);
    }
  }
  for (const std::string& name : o.sources) {
    if (std::none_of(corpus.begin(), corpus.end(),
                     [&](const CorpusSourceInfo& i) { return i.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("prepare: source '", name, "' is not in ", o.corpus_dir, "/corpus.json"));
    }
  }
  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", o.out_dir, ": ", ec.message()));

  PrepareResult result;
  std::vector<Split> splits;
  // Held-out splits first: exact dedup then keeps the evaluation copy of a duplicated document.
  for (const char* split_name : {"heldout", "train"}) {
    for (const CorpusSourceInfo& info : chosen) splits.push_back({info.name, split_name, info.kind, {}});
  }
  ExactDeduper exact;
  NearDeduper near(o.near_dedup);
  Decontaminator decontam(o.decontam);
  // Pass 1, every split: read, normalise, quality filters, exact dedup; held-out documents
  // become the evaluation set of the decontaminator.
  for (Split& split : splits) {
    FilterReport::Counts& counts = result.report.by_source[split.source + "/" + split.split];
    LOOM_RETURN_IF_ERROR(ReadSplit(o.corpus_dir, &split, &counts));
    const QualityOptions& quality = QualityFor(o, split);
    std::vector<Doc> kept;
    for (Doc& doc : split.docs) {
      if (split.kind == SourceKind::kText) doc.text = NormalizeText(doc.text);
      std::string_view rejected = QualityFilter(doc.text, quality);
      if (rejected.empty() && !exact.Insert(doc.text)) rejected = kFilterExactDup;
      if (!rejected.empty()) {
        ++counts.removed[std::string(rejected)];
        continue;
      }
      if (split.split != "train") decontam.AddEval(doc.text);
      kept.push_back(std::move(doc));
    }
    split.docs = std::move(kept);
  }
  // Pass 2: evaluation n-grams common in training documents are boilerplate, not leaks.
  for (const Split& split : splits) {
    if (split.split != "train") continue;
    for (const Doc& doc : split.docs) decontam.CountTraining(doc.text);
  }
  const size_t boilerplate = decontam.DropBoilerplate();
  say(absl::StrFormat(
      "decontamination: %d evaluation n-grams, %d more ignored as boilerplate (in > %d training documents)",
      decontam.ngrams(), boilerplate, o.decontam.max_train_docs));
  // Pass 3, training splits: decontamination, then near dedup of text sources.
  for (Split& split : splits) {
    FilterReport::Counts& counts = result.report.by_source[split.source + "/" + split.split];
    if (split.split == "train") {
      std::vector<Doc> kept;
      for (Doc& doc : split.docs) {
        std::string_view rejected;
        if (decontam.Contaminated(doc.text)) rejected = kFilterDecontam;
        if (rejected.empty() && split.kind == SourceKind::kText && !near.Insert(doc.text))
          rejected = kFilterNearDup;
        if (!rejected.empty()) {
          ++counts.removed[std::string(rejected)];
          continue;
        }
        kept.push_back(std::move(doc));
      }
      split.docs = std::move(kept);
    }
    counts.kept = static_cast<int64_t>(split.docs.size());
    say(absl::StrFormat("cleaned %s/%s: %d of %d documents kept", split.source, split.split, counts.kept,
                        counts.input));
  }

  // Tokenizer: a given one is copied in under its kind's name (tokenizer.model or
  // tokenizer.json), and the other name removed, so DefaultTokenizerPath finds this one.
  std::string model_path = (fs::path(o.out_dir) / kSentencePieceFile).string();
  if (given != nullptr) {
    const bool json = given->kind() != "sentencepiece";
    model_path = (fs::path(o.out_dir) / (json ? kHuggingFaceTokenizerFile : kSentencePieceFile)).string();
    if (fs::absolute(o.tokenizer) != fs::absolute(model_path)) {
      fs::copy_file(o.tokenizer, model_path, fs::copy_options::overwrite_existing, ec);
      if (ec)
        return absl::InternalError(
            absl::StrCat("cannot copy ", o.tokenizer, " to ", model_path, ": ", ec.message()));
    }
    if (json) {
      for (const char* stale : {kSentencePieceFile, "tokenizer.vocab"})
        fs::remove(fs::path(o.out_dir) / stale, ec);
    } else {
      fs::remove(fs::path(o.out_dir) / kHuggingFaceTokenizerFile, ec);
    }
    say(absl::StrFormat("tokenizer %s (%s): %d pieces", o.tokenizer, given->kind(), given->vocab_size()));
  } else {
    fs::remove(fs::path(o.out_dir) / kHuggingFaceTokenizerFile, ec);
    const std::string sample = (fs::path(o.out_dir) / "tokenizer-sample.txt").string();
    LOOM_RETURN_IF_ERROR(WriteTokenizerSample(splits, o.tokenizer_sample_bytes, sample));
    say(absl::StrFormat("training a %d-piece BPE tokenizer on %d KiB of text", o.vocab_size,
                        fs::file_size(sample) / 1024));
    TokenizerTrainOptions t;
    t.inputs = {sample};
    t.model_prefix = (fs::path(o.out_dir) / "tokenizer").string();
    t.vocab_size = o.vocab_size;
    t.threads = o.threads > 0 ? o.threads : 2;
    t.seed = o.seed;
    const absl::Status trained = TrainTokenizer(t);
    fs::remove(sample, ec);
    LOOM_RETURN_IF_ERROR(trained);
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::Load(model_path));
  result.tokenizer_hash = tokenizer->hash();
  result.vocab_size = tokenizer->vocab_size();

  // Encode text sources into shards; copy chat and preference lines.
  for (const Split& split : splits) {
    const std::string key = split.source + "/" + split.split;
    PreparedSplit& out = result.splits[key];
    out.docs = static_cast<int64_t>(split.docs.size());
    const fs::path base = fs::path(o.out_dir) / split.source;
    fs::create_directories(base, ec);
    if (split.kind != SourceKind::kText) {
      std::string lines;
      for (const Doc& d : split.docs) absl::StrAppend(&lines, d.line, "\n");
      LOOM_RETURN_IF_ERROR(WriteFileDurably((base / (split.split + ".jsonl")).string(), lines));
      continue;
    }
    std::vector<std::string_view> texts;
    int64_t bytes = 0;
    for (const Doc& d : split.docs) {
      texts.push_back(d.text);
      bytes += static_cast<int64_t>(d.text.size());
    }
    int last_decile = -1;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::vector<int32_t>> ids =
        tokenizer->EncodeBatch(texts, o.threads, [&](size_t done, size_t total) {
          const int decile = total == 0 ? 10 : static_cast<int>(10 * done / total);
          if (decile / 5 != last_decile / 5 || last_decile < 0) {
            say(absl::StrFormat("encoding %s: %d/%d documents", key, done, total));
          }
          last_decile = decile;
        });
    result.encode_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.encoded_bytes += bytes;
    for (std::vector<int32_t>& doc : ids) {
      doc.push_back(tokenizer->eos_id());
      out.tokens += static_cast<int64_t>(doc.size());
    }
    const std::string dir = (base / split.split).string();
    fs::remove_all(dir, ec);  // stale shards of an earlier run would join the stream
    LOOM_ASSIGN_OR_RETURN(out.shards, WriteShardDir(dir, ids, tokenizer->hash(), tokenizer->vocab_size(),
                                                    o.max_tokens_per_shard));
  }

  Json manifest{{"tokenizer", fs::path(model_path).filename().string()},
                {"tokenizer_kind", tokenizer->kind()},
                {"tokenizer_sha256", result.tokenizer_hash},
                {"vocab_size", result.vocab_size},
                {"seed", o.seed},
                {"corpus", fs::absolute(o.corpus_dir).string()},
                {"sources", Json::object()},
                {"near_dedup",
                 {{"shingle_words", o.near_dedup.shingle_words},
                  {"bands", o.near_dedup.bands},
                  {"rows", o.near_dedup.rows},
                  {"threshold", o.near_dedup.threshold}}},
                {"decontamination_ngram", o.decontam.ngram}};
  for (const CorpusSourceInfo& info : chosen) {
    Json source{{"kind", SourceKindName(info.kind)}};
    for (const char* split : {"train", "heldout"}) {
      const std::string key = info.name + "/" + split;
      const PreparedSplit& p = result.splits[key];
      const FilterReport::Counts& c = result.report.by_source[key];
      source[split] = Json{{"docs", p.docs},
                           {"tokens", p.tokens},
                           {"shards", p.shards},
                           {"input_docs", c.input},
                           {"removed", c.removed}};
    }
    manifest["sources"][info.name] = source;
  }
  LOOM_RETURN_IF_ERROR(
      WriteFileDurably((fs::path(o.out_dir) / "prepare.json").string(), manifest.dump(2) + "\n"));
  return result;
}

}  // namespace loom::data
