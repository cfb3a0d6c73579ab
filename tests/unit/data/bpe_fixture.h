// Hand-written Hugging Face tokenizer.json files for tests of byte-level BPE: the 256 byte pieces
// (id = byte), merges given as plain text, then added tokens. Shared by the data unit tests and
// the `loom data prepare --tokenizer tokenizer.json` integration test.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"

namespace loom::data::testing {

// GPT-2's byte alphabet, written out again from its definition (not shared with the code under test).
inline std::string ByteChar(unsigned char b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int moved = 0;
    for (int c = 0; c < 256; ++c) {
      const bool keep = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
      const int cp = keep ? c : 256 + moved++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t[c] = s;
    }
    return t;
  }();
  return table[b];
}

// `text` in the byte alphabet (" the" -> "Ġthe").
inline std::string Mapped(const std::string& text) {
  std::string out;
  for (char c : text) out += ByteChar(static_cast<unsigned char>(c));
  return out;
}

inline constexpr char kLlama3PatternForTests[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct HandTokenizer {
  std::vector<std::pair<std::string, std::string>> merges;  // plain text, mapped when written
  std::vector<std::string> added = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im"};
  bool pairs = false;   // merges as ["a", "b"] instead of "a b"
  bool llama3 = false;  // Sequence[Split{Llama-3 pattern}, ByteLevel] instead of ByteLevel{use_regex}

  nlohmann::json Build() const {
    using Json = nlohmann::json;
    Json vocab = Json::object();
    for (int b = 0; b < 256; ++b) vocab[ByteChar(static_cast<unsigned char>(b))] = b;
    Json merge_list = Json::array();
    for (const auto& [a, b] : merges) {
      if (!vocab.contains(Mapped(a + b))) vocab[Mapped(a + b)] = vocab.size();
      if (pairs) {
        merge_list.push_back(Json::array({Mapped(a), Mapped(b)}));
      } else {
        merge_list.push_back(Mapped(a) + " " + Mapped(b));
      }
    }
    Json added_tokens = Json::array();
    for (const std::string& t : added) {
      added_tokens.push_back({{"id", vocab.size() + added_tokens.size()},
                              {"content", t},
                              {"special", true},
                              {"lstrip", false},
                              {"rstrip", false},
                              {"single_word", false},
                              {"normalized", false}});
    }
    Json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
    if (llama3) {
      pre = {{"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"},
                {"pattern", {{"Regex", kLlama3PatternForTests}}},
                {"behavior", "Isolated"},
                {"invert", false}},
               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    }
    return Json{{"version", "1.0"},
                {"added_tokens", added_tokens},
                {"normalizer", nullptr},
                {"pre_tokenizer", pre},
                {"post_processor", nullptr},
                {"decoder", {{"type", "ByteLevel"}}},
                {"model",
                 {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"vocab", vocab},
                  {"merges", merge_list}}}};
  }
};

}  // namespace loom::data::testing
