// Private to data/: Hugging Face byte-level BPE tokenizers (the tokenizer.json of GPT-2, Llama-3,
// Qwen2 and their kin), encoded and decoded exactly as the `tokenizers` library does.
//
// Encoding a text:
//   1. added tokens (added_tokens[].content, e.g. <|im_start|>) are cut out first, longest match
//      first at the leftmost position, and become their ids: they are never split;
//   2. each stretch between them is normalised (normalizer: none or NFC), cut by the
//      pre-tokenizer regex (byte_level_pretokenizer.h), and each piece's bytes mapped to GPT-2's
//      printable byte alphabet (byte 0x20 -> "Ġ", ...);
//   3. each piece is merged by rank: repeatedly the adjacent pair with the lowest merge rank
//      (leftmost on ties) becomes one symbol, until no pair is in model.merges.
// Decoding maps pieces back through the byte alphabet; added tokens decode as their content.
// BOS/EOS are never added (the post_processor is ignored): Loom's data pipeline adds EOS itself.
//
// Special ids, which tokenizer.json does not name: eos is the first of <|endoftext|>,
// <|end_of_text|>, </s>, <eos> present (required), bos of <|begin_of_text|>, <s>, <bos>, pad of
// <|pad|>, <pad> (either may be absent: -1), unk is model.unk_token (usually null: -1).
//
// What is refused (each error names the field): a model that is not BPE, dropout, subword
// prefixes or suffixes, byte_fallback, a normalizer other than NFC, a pre-tokenizer that is not
// byte-level with a supported pattern, add_prefix_space, a decoder that is not ByteLevel,
// lstrip/rstrip/single_word added tokens, ids that are not dense, merges of pieces not in the
// vocabulary, a vocabulary without all 256 byte pieces, and sizes past the bounds below.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "data/tokenizer_backend.h"

namespace loom::data::internal {

inline constexpr size_t kMaxTokenizerJsonBytes = size_t{512} << 20;
inline constexpr int kMaxBpeVocab = 1 << 22;
inline constexpr int kMaxBpeMerges = 1 << 22;
inline constexpr int kMaxBpePieceBytes = 4096;

// Parses and checks `json` (the contents of a tokenizer.json; `name` prefixes every error).
absl::StatusOr<std::unique_ptr<TokenizerBackend>> LoadByteLevelBpe(std::string_view json,
                                                                   const std::string& name);

}  // namespace loom::data::internal
