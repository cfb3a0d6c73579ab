// Private to data/: what a Tokenizer needs from the model behind it. Two backends implement it:
// SentencePiece (tokenizer.cc, through the module in sentencepiece_backend.h) and Hugging Face
// byte-level BPE (byte_level_bpe.h). Tokenizer adds what both share: hashing, batching, loading.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace loom::data::internal {

class TokenizerBackend {
 public:
  virtual ~TokenizerBackend() = default;
  // Token ids of `text`, no BOS/EOS added. Thread-safe; never fails (any bytes have an encoding).
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int32_t PieceToId(std::string_view piece) const = 0;  // -1 when absent
  virtual std::string IdToPiece(int32_t id) const = 0;          // "" when out of range
  virtual int32_t unk_id() const = 0;                           // -1 when none
  virtual int32_t bos_id() const = 0;                           // -1 when none
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;  // -1 when none
};

}  // namespace loom::data::internal
