#include "data/tokenizer.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/confined_read.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/status_macros.h"
#include "data/byte_level_bpe.h"
#include "data/sentencepiece_backend.h"
#include "data/tokenizer_backend.h"

namespace loom::data {
namespace {

#if defined(__SANITIZE_ADDRESS__)
#define LOOM_ADDRESS_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOOM_ADDRESS_SANITIZER 1
#endif
#endif

// dlopen() with RTLD_DEEPBIND. Under AddressSanitizer (-DLOOM_SANITIZE=ON, tests/sanitize/run) the
// runtime's dlopen interceptor refuses RTLD_DEEPBIND and kills the process (google/sanitizers
// issue 611: a deep-bound library would bypass the interceptors), so that build calls glibc's own
// dlopen. The module still allocates through libstdc++'s operator new, which is bound to ASan's
// allocator, so memory it hands to Loom (vectors, strings) is freed by the allocator that made it
// (tests/sanitize/run turns off alloc_dealloc_mismatch, which this mix of new and delete trips).
void* DlopenDeepBound(const char* path, int flags) {
#ifdef LOOM_ADDRESS_SANITIZER
  using DlopenFn = void* (*)(const char*, int);
  if (auto real = reinterpret_cast<DlopenFn>(::dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34")); real != nullptr)
    return real(path, flags | RTLD_DEEPBIND);
#endif
  return ::dlopen(path, flags | RTLD_DEEPBIND);
}

// Finds and loads libloom_sentencepiece.so once per process (see sentencepiece_backend.h for why
// SentencePiece lives in a module of its own). Looked for, in order: $LOOM_SENTENCEPIECE_MODULE,
// next to the executable, in ../lib/loom/ from it (installed layout), and where the build put it.
absl::StatusOr<const internal::SentencePieceApi*> SentencePiece() {
  static const absl::StatusOr<const internal::SentencePieceApi*> api =
      []() -> absl::StatusOr<const internal::SentencePieceApi*> {
    constexpr char kName[] = "libloom_sentencepiece.so";
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LOOM_SENTENCEPIECE_MODULE"); env != nullptr && *env != 0)
      candidates.push_back(env);
    std::error_code ec;
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) {
      candidates.push_back((exe.parent_path() / kName).string());
      candidates.push_back((exe.parent_path() / "../lib/loom" / kName).string());
    }
#ifdef LOOM_SENTENCEPIECE_MODULE_PATH
    candidates.push_back(LOOM_SENTENCEPIECE_MODULE_PATH);
#endif
    std::string tried;
    for (const std::string& path : candidates) {
      if (!std::filesystem::exists(path, ec)) {
        absl::StrAppend(&tried, "\n  ", path, ": not found");
        continue;
      }
      // RTLD_DEEPBIND: SentencePiece binds to its own bundled protobuf, not the system one.
      void* handle = DlopenDeepBound(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (handle == nullptr) {
        absl::StrAppend(&tried, "\n  ", path, ": ", ::dlerror());
        continue;
      }
      auto fn =
          reinterpret_cast<internal::SentencePieceApiFn>(::dlsym(handle, internal::kSentencePieceApiSymbol));
      if (fn == nullptr) {
        absl::StrAppend(&tried, "\n  ", path, ": no symbol ", internal::kSentencePieceApiSymbol);
        continue;
      }
      return fn();  // the handle stays open for the life of the process
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot load Loom's SentencePiece module ", kName,
        " (build target loom_sentencepiece, or set LOOM_SENTENCEPIECE_MODULE to its path); tried:", tried));
  }();
  return api;
}

// The SentencePiece module's model as a TokenizerBackend.
class SentencePieceBackend : public internal::TokenizerBackend {
 public:
  explicit SentencePieceBackend(std::unique_ptr<internal::SentencePieceModel> model)
      : model_(std::move(model)) {}
  std::vector<int32_t> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    std::string error;
    // With byte fallback the encoder has no failure mode on any input; an error here would be a
    // corrupted model, which Load already refused.
    model_->Encode(text, &ids, &error);
    return ids;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override { return model_->Decode(ids); }
  int vocab_size() const override { return model_->vocab_size(); }
  int32_t PieceToId(std::string_view piece) const override {
    const int32_t id = model_->PieceToId(piece);
    if (id == model_->unk_id() && piece != model_->IdToPiece(id)) return -1;
    return id;
  }
  std::string IdToPiece(int32_t id) const override { return model_->IdToPiece(id); }
  int32_t unk_id() const override { return model_->unk_id(); }
  int32_t bos_id() const override { return model_->bos_id(); }
  int32_t eos_id() const override { return model_->eos_id(); }
  int32_t pad_id() const override { return model_->pad_id(); }

 private:
  std::unique_ptr<internal::SentencePieceModel> model_;
};

// A Hugging Face tokenizer.json: named *.json, or its first non-blank byte opens a JSON object.
bool IsHuggingFaceJson(const std::string& path, std::string_view bytes) {
  if (std::filesystem::path(path).extension() == ".json") return true;
  const size_t first = bytes.find_first_not_of(" \n\r\t");
  return first != std::string_view::npos && bytes[first] == '{';
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<internal::TokenizerBackend> model, std::string kind, std::string path,
                     std::string hash)
    : model_(std::move(model)), kind_(std::move(kind)), path_(std::move(path)), hash_(std::move(hash)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& path) {
  auto unreadable = [&](const absl::Status& s) {  // s names the path
    return absl::Status(s.code(), absl::StrCat("tokenizer model: ", s.message(),
                                               s.code() == absl::StatusCode::kNotFound
                                                   ? " (train one with `loom data prepare`)"
                                                   : ""));
  };
  // Read once, through one descriptor confined to the read roots (a rank's;
  // common/confined_read.h): the hash, the format and the model all come from the same bytes.
  absl::StatusOr<ConfinedFile> file = OpenConfined(path);
  if (!file.ok()) return unreadable(file.status());
  struct stat st {};
  if (::fstat(file->fd(), &st) != 0) return unreadable(ErrnoError("cannot stat", path));
  const bool json_by_name = std::filesystem::path(path).extension() == ".json";
  auto too_big = [&](uintmax_t size) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", size, " bytes is more than the limit of ",
                                                   internal::kMaxTokenizerJsonBytes,
                                                   " for a tokenizer.json"));
  };
  if (json_by_name && static_cast<uintmax_t>(st.st_size) > internal::kMaxTokenizerJsonBytes) {
    return too_big(st.st_size);
  }
  absl::StatusOr<std::string> bytes = ReadAll(*file);
  if (!bytes.ok()) return unreadable(bytes.status());
  std::string hash = Sha256Hex(*bytes);
  if (IsHuggingFaceJson(path, *bytes)) {
    if (bytes->size() > internal::kMaxTokenizerJsonBytes) return too_big(bytes->size());
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<internal::TokenizerBackend> bpe,
                          internal::LoadByteLevelBpe(*bytes, path));
    return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(bpe), "byte-level-bpe", path, std::move(hash)));
  }
  LOOM_ASSIGN_OR_RETURN(const internal::SentencePieceApi* spm, SentencePiece());
  std::string error;
  std::unique_ptr<internal::SentencePieceModel> model = spm->load(*bytes, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer model ", path,
                                                   " is not a SentencePiece model (", error,
                                                   ") nor a Hugging Face tokenizer.json"));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::make_unique<SentencePieceBackend>(std::move(model)),
                                                  "sentencepiece", path, std::move(hash)));
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text) const { return model_->Encode(text); }

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const { return model_->Decode(ids); }

std::vector<std::vector<int32_t>> Tokenizer::EncodeBatch(
    const std::vector<std::string_view>& docs, int threads,
    const std::function<void(size_t, size_t)>& progress) const {
  std::vector<std::vector<int32_t>> out(docs.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<size_t>(threads, std::max<size_t>(1, docs.size())));
  // Work is handed out in small chunks from a shared counter so that long documents (code files)
  // do not leave one thread working alone at the end.
  constexpr size_t kChunk = 16;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  const size_t step = std::max<size_t>(1, docs.size() / 100);
  auto work = [&](bool reports) {
    size_t last_report = 0;
    while (true) {
      const size_t begin = next.fetch_add(kChunk);
      if (begin >= docs.size()) break;
      const size_t end = std::min(docs.size(), begin + kChunk);
      for (size_t i = begin; i < end; ++i) out[i] = Encode(docs[i]);
      const size_t now = done.fetch_add(end - begin) + (end - begin);
      if (reports && progress && now - last_report >= step) {
        progress(now, docs.size());
        last_report = now;
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, false);
  work(true);
  for (std::thread& t : pool) t.join();
  if (progress) progress(docs.size(), docs.size());
  return out;
}

int Tokenizer::vocab_size() const { return model_->vocab_size(); }
int32_t Tokenizer::PieceToId(std::string_view piece) const { return model_->PieceToId(piece); }
std::string Tokenizer::IdToPiece(int32_t id) const { return model_->IdToPiece(id); }
int32_t Tokenizer::bos_id() const { return model_->bos_id(); }
int32_t Tokenizer::eos_id() const { return model_->eos_id(); }
int32_t Tokenizer::pad_id() const { return model_->pad_id(); }
int32_t Tokenizer::unk_id() const { return model_->unk_id(); }

absl::Status TrainTokenizer(const TokenizerTrainOptions& options) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("TrainTokenizer: no input files");
  if (options.model_prefix.empty())
    return absl::InvalidArgumentError("TrainTokenizer: model_prefix is empty");
  if (options.vocab_size < 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer vocab_size ", options.vocab_size, " is too small: use at least 64"));
  }
  std::vector<std::string> symbols = {kImStart, kImEnd};
  symbols.insert(symbols.end(), options.user_symbols.begin(), options.user_symbols.end());
  const std::map<std::string, std::string> args = {
      {"input", absl::StrJoin(options.inputs, ",")},
      {"model_prefix", options.model_prefix},
      {"model_type", "bpe"},
      {"vocab_size", absl::StrCat(options.vocab_size)},
      {"byte_fallback", "true"},
      // Loom's shards hold exactly what the cleaner produced: no normalisation in the tokenizer,
      // no dummy "▁" before each text, whitespace kept (code indentation), digits split (math).
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "3"},
      {"user_defined_symbols", absl::StrJoin(symbols, ",")},
      {"input_sentence_size", absl::StrCat(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", absl::StrCat(options.max_sentence_length)},
      {"num_threads", absl::StrCat(std::max(1, options.threads))},
      // Small corpora cannot always fill the requested vocabulary; fail with a clear message
      // rather than a smaller model the plan did not ask for.
      {"hard_vocab_limit", "true"},
  };
  LOOM_ASSIGN_OR_RETURN(const internal::SentencePieceApi* spm, SentencePiece());
  std::string error;
  if (!spm->train(args, options.seed, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("training the tokenizer (", options.model_prefix,
                                                   ".model, vocab ", options.vocab_size,
                                                   ") failed: ", error));
  }
  return absl::OkStatus();
}

}  // namespace loom::data
