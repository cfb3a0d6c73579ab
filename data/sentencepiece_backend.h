// Private to data/: the only bridge to SentencePiece.
//
// Two Debian traps shape it (data/README.md has the details):
//   * SentencePiece's header declares `absl::string_view` as `std::string_view`, which clashes
//     with Debian's Abseil, so this interface uses standard types only and
//     sentencepiece_backend.cc includes no Abseil header.
//   * Debian's libsentencepiece carries its own protobuf-lite 3.14 and exports those symbols,
//     which collide with the system libprotobuf 3.21 that Loom's plan code links: in one global
//     symbol scope SentencePiece aborts ("compiled against version 3.14.0 ..."). So the backend is
//     a separate shared module, libloom_sentencepiece.so, which data/tokenizer.cc loads with
//     dlopen(RTLD_LOCAL | RTLD_DEEPBIND): SentencePiece then binds to its own protobuf and Loom's
//     code to the system one. Only the virtual interface below crosses the boundary. Deep
//     binding has two known hazards with copy-relocated globals; the module neutralises both
//     when it loads (see sentencepiece_backend.cc).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace loom::data::internal {

class SentencePieceModel {
 public:
  virtual ~SentencePieceModel() = default;
  // Thread-safe (SentencePiece's encoder is const).
  virtual bool Encode(std::string_view text, std::vector<int32_t>* ids, std::string* error) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int32_t PieceToId(std::string_view piece) const = 0;  // unk id when absent
  virtual std::string IdToPiece(int32_t id) const = 0;
  virtual int32_t unk_id() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
};

struct SentencePieceApi {
  // Loads a model from its serialized bytes (the contents of a .model file, which the caller read:
  // data/tokenizer.cc reads it confined to the read roots); returns null and sets *error on failure.
  std::unique_ptr<SentencePieceModel> (*load)(std::string_view serialized, std::string* error);
  // Runs SentencePiece's trainer with its named arguments (`input`, `model_prefix`, ...); returns
  // false and sets *error. `seed` seeds SentencePiece's sentence sampling (same seed and inputs:
  // same model). SentencePiece's own logging is off in this module (see the .cc).
  bool (*train)(const std::map<std::string, std::string>& args, uint64_t seed, std::string* error);
};

// The module's one exported symbol.
inline constexpr char kSentencePieceApiSymbol[] = "loom_sentencepiece_api";
using SentencePieceApiFn = const SentencePieceApi* (*)();

}  // namespace loom::data::internal
