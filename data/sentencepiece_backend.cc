// libloom_sentencepiece.so: the one translation unit that includes SentencePiece (see
// sentencepiece_backend.h for why it is a module of its own). It must include no Abseil or gRPC
// header: SentencePiece's `namespace absl { using std::string_view; }` collides with Debian's
// Abseil, whose absl::string_view is a class of its own.
#include "data/sentencepiece_backend.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <sys/single_threaded.h>

#include <unordered_map>

// Exported by libsentencepiece but not declared in its public headers.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace loom::data::internal {
namespace {

// This module is loaded with RTLD_DEEPBIND, so SentencePiece's references to libc and libstdc++
// globals bind to those libraries' own definitions, not to the copies that copy relocations put
// in the executable. Two such globals are live state, and are made safe here:
//   * __libc_single_threaded: libc updates the executable's copy when the first thread starts;
//     the definition SentencePiece sees would stay "single-threaded" and let its inlined
//     shared_ptr code skip atomic reference counts. Setting it to 0 (multi-threaded) is always
//     correct, only conservative; libc itself reads the executable's copy.
//   * std::cerr: the object SentencePiece would see is never constructed. Its logging (the only
//     use of std::cerr) is switched off; errors still come back as statuses.
__attribute__((constructor)) void PrepareDeepBoundSentencePiece() {
  __libc_single_threaded = 0;
  sentencepiece::logging::SetMinLogLevel(100);
}

class Model final : public SentencePieceModel {
 public:
  sentencepiece::SentencePieceProcessor processor;

  bool Encode(std::string_view text, std::vector<int32_t>* ids, std::string* error) const override {
    std::vector<int> out;
    const auto status = processor.Encode(text, &out);
    if (!status.ok()) {
      *error = status.ToString();
      return false;
    }
    ids->assign(out.begin(), out.end());
    return true;
  }
  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> in(ids.begin(), ids.end());
    std::string text;
    if (!processor.Decode(in, &text).ok()) return {};
    return text;
  }
  int vocab_size() const override { return processor.GetPieceSize(); }
  int32_t PieceToId(std::string_view piece) const override { return processor.PieceToId(piece); }
  std::string IdToPiece(int32_t id) const override { return processor.IdToPiece(id); }
  int32_t unk_id() const override { return processor.unk_id(); }
  int32_t bos_id() const override { return processor.bos_id(); }
  int32_t eos_id() const override { return processor.eos_id(); }
  int32_t pad_id() const override { return processor.pad_id(); }
};

std::unique_ptr<SentencePieceModel> Load(std::string_view serialized, std::string* error) {
  auto model = std::make_unique<Model>();
  try {
    const auto status = model->processor.LoadFromSerializedProto(serialized);
    if (!status.ok()) {
      *error = status.ToString();
      return nullptr;
    }
  } catch (const std::exception& e) {
    *error = e.what();
    return nullptr;
  }
  return model;
}

bool Train(const std::map<std::string, std::string>& args, uint64_t seed, std::string* error) {
  // 0 is reserved by SentencePiece for "seed from std::random_device".
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(seed % 0xfffffffeu) + 1);
  std::unordered_map<std::string, std::string> kwargs(args.begin(), args.end());
  try {
    const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs);
    if (!status.ok()) {
      *error = status.ToString();
      return false;
    }
  } catch (const std::exception& e) {
    *error = e.what();
    return false;
  }
  return true;
}

constexpr SentencePieceApi kApi = {&Load, &Train};

}  // namespace
}  // namespace loom::data::internal

extern "C" __attribute__((visibility("default"))) const loom::data::internal::SentencePieceApi*
loom_sentencepiece_api() {
  return &loom::data::internal::kApi;
}
