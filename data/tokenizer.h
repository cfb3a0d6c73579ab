// Loom's tokenizer: a SentencePiece model (the default, trained by `loom data prepare`) or a
// Hugging Face byte-level BPE tokenizer.json (GPT-2, Llama-3, Qwen2 style; data/byte_level_bpe.h),
// behind one small interface, so that no other translation unit includes SentencePiece's headers
// (they clash with Debian's Abseil; see data/README.md).
//
//   LOOM_ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(DefaultTokenizerPath(dir)));
//   std::vector<int32_t> ids = tok->Encode("Hello");
//
// SentencePiece models trained by TrainTokenizer are byte-level BPE with byte fallback, no text normalisation
// and no dummy prefix, so Decode(Encode(a) ++ Encode(b)) == a + b for any UTF-8 strings a and b:
// chat templates can encode their pieces separately and still mask exact spans.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "data/tokenizer_path.h"

namespace loom::data {

namespace internal {
class TokenizerBackend;
}

// Special pieces every tokenizer Loom trains has (user-defined symbols, never split), for chat
// templates. A tokenizer.json has them only if its added_tokens do (Qwen2's do, Llama-3's not).
inline constexpr char kImStart[] = "<|im_start|>";
inline constexpr char kImEnd[] = "<|im_end|>";

class Tokenizer {
 public:
  // Loads a tokenizer file and hashes it (SHA-256 of the file's bytes). A file named *.json, or
  // whose content starts with `{`, is a Hugging Face tokenizer.json; anything else is a
  // SentencePiece model. Errors name the file and, for tokenizer.json, the field.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text` (no BOS/EOS added). Thread-safe. Text that is not valid UTF-8 is encoded
  // through byte fallback (SentencePiece) or byte pieces (BPE), never dropped.
  std::vector<int32_t> Encode(std::string_view text) const;
  std::string Decode(const std::vector<int32_t>& ids) const;

  // Encodes many documents on `threads` threads (0: hardware concurrency); results keep the
  // input order. `progress(done, total)` is called from one thread, every ~1% of the documents.
  std::vector<std::vector<int32_t>> EncodeBatch(
      const std::vector<std::string_view>& docs, int threads,
      const std::function<void(size_t done, size_t total)>& progress = nullptr) const;

  int vocab_size() const;
  // "sentencepiece" or "byte-level-bpe".
  const std::string& kind() const { return kind_; }
  // SHA-256 (hex) of the model file: token shards record it and refuse a different tokenizer.
  const std::string& hash() const { return hash_; }
  const std::string& path() const { return path_; }
  // The id of a piece (e.g. kImEnd); -1 when the model has no such piece. BPE pieces are spelled
  // in the byte alphabet ("Ġthe"); added tokens as their content.
  int32_t PieceToId(std::string_view piece) const;
  std::string IdToPiece(int32_t id) const;
  int32_t bos_id() const;  // -1 when the model has none (BPE)
  int32_t eos_id() const;
  int32_t pad_id() const;  // -1 when the model has none
  int32_t unk_id() const;  // -1 when the model has none (BPE)

 private:
  Tokenizer(std::unique_ptr<internal::TokenizerBackend> model, std::string kind, std::string path,
            std::string hash);
  std::unique_ptr<internal::TokenizerBackend> model_;
  std::string kind_;
  std::string path_;
  std::string hash_;
};

struct TokenizerTrainOptions {
  // Text files, one sentence per line (SentencePiece ignores lines longer than
  // max_sentence_length bytes).
  std::vector<std::string> inputs;
  // Writes <model_prefix>.model and <model_prefix>.vocab.
  std::string model_prefix;
  int vocab_size = 8000;
  // Sentences sampled from the inputs for training (SentencePiece's input_sentence_size).
  int64_t max_sentences = 200000;
  int max_sentence_length = 8192;
  // Extra user-defined symbols beyond kImStart and kImEnd.
  std::vector<std::string> user_symbols;
  int threads = 2;
  uint64_t seed = 1;
};

// Trains a byte-fallback BPE model (ids: 0 <unk>, 1 <s>, 2 </s>, 3 <pad>, then the user
// symbols). Errors name the option or file concerned.
absl::Status TrainTokenizer(const TokenizerTrainOptions& options);

}  // namespace loom::data
