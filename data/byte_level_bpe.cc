#include "data/byte_level_bpe.h"

#include <algorithm>
#include <array>
#include <functional>
#include <mutex>
#include <queue>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "data/byte_level_pretokenizer.h"
#include "nlohmann/json.hpp"

namespace loom::data::internal {
namespace {

using Json = nlohmann::json;

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the other 68 (control
// characters, space, 0x7F-0xA0, 0xAD) are moved to U+0100..U+0143, so every byte is a visible
// character and a piece is a plain string.
std::array<uint32_t, 256> ByteToCodepoint() {
  std::array<uint32_t, 256> table{};
  uint32_t moved = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? b : 256 + moved++;
  }
  return table;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Next code point of valid UTF-8 (nlohmann_json checked the strings); advances *i.
uint32_t NextCodepoint(std::string_view s, size_t* i) {
  const auto c = static_cast<unsigned char>(s[*i]);
  int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  uint32_t cp = extra == 3 ? (c & 0x07) : extra == 2 ? (c & 0x0F) : extra == 1 ? (c & 0x1F) : c;
  ++*i;
  while (extra-- > 0 && *i < s.size()) cp = (cp << 6) | (static_cast<unsigned char>(s[(*i)++]) & 0x3F);
  return cp;
}

std::string Quoted(const std::string& s) {
  return Json(s).dump(-1, ' ', false, Json::error_handler_t::replace);
}

struct AddedToken {
  std::string content;
  int32_t id;
};

struct Merge {
  int32_t rank;
  int32_t result;
};

class ByteLevelBpe : public TokenizerBackend {
 public:
  std::vector<int32_t> Encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    size_t segment = 0;
    for (size_t i = 0; i < text.size();) {
      const AddedToken* match = nullptr;
      if (!added_by_first_byte_[static_cast<unsigned char>(text[i])].empty()) {
        for (const AddedToken* t : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
          if (text.compare(i, t->content.size(), t->content) == 0) {
            match = t;  // longest first
            break;
          }
        }
      }
      if (match == nullptr) {
        ++i;
        continue;
      }
      EncodeSegment(text.substr(segment, i - segment), &ids);
      ids.push_back(match->id);
      i += match->content.size();
      segment = i;
    }
    EncodeSegment(text.substr(segment), &ids);
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    for (int32_t id : ids) {
      if (id >= 0 && id < vocab_size()) out += decoded_[id];
    }
    return out;
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int32_t PieceToId(std::string_view piece) const override {
    const std::string key(piece);
    if (auto it = added_ids_.find(key); it != added_ids_.end()) return it->second;
    if (auto it = vocab_.find(key); it != vocab_.end()) return it->second;
    return -1;
  }
  std::string IdToPiece(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? pieces_[id] : std::string();
  }
  int32_t unk_id() const override { return unk_; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }

 private:
  friend absl::StatusOr<std::unique_ptr<TokenizerBackend>> internal::LoadByteLevelBpe(std::string_view,
                                                                                      const std::string&);

  void EncodeSegment(std::string_view segment, std::vector<int32_t>* ids) const {
    if (segment.empty()) return;
    std::string normalized;
    if (nfc_) {
      normalized = NormalizeNfc(segment);
      segment = normalized;
    }
    for (std::string_view piece : pre_tokenizer_->Split(segment)) EncodePiece(piece, ids);
  }

  // One pre-tokenized piece, through the cache: words repeat, and merging is the costly part.
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids) const {
    constexpr size_t kMaxCachedBytes = 64;
    constexpr size_t kMaxEntriesPerShard = 1 << 14;
    CacheShard* shard = nullptr;
    if (piece.size() <= kMaxCachedBytes) {
      shard = &cache_[std::hash<std::string_view>()(piece) % cache_.size()];
      std::lock_guard<std::mutex> lock(shard->mu);
      if (auto it = shard->map.find(std::string(piece)); it != shard->map.end()) {
        ids->insert(ids->end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const std::vector<int32_t> merged = MergePiece(piece);
    ids->insert(ids->end(), merged.begin(), merged.end());
    if (shard != nullptr) {
      std::lock_guard<std::mutex> lock(shard->mu);
      if (shard->map.size() >= kMaxEntriesPerShard) shard->map.clear();
      shard->map.emplace(std::string(piece), merged);
    }
  }

  // Rank-ordered merging with a heap over adjacent pairs (lowest rank, then leftmost), the
  // symbols kept as a linked list: O(n log n) in the piece's bytes, so a megabyte of letters
  // without a space costs no more than its words would.
  std::vector<int32_t> MergePiece(std::string_view piece) const {
    if (ignore_merges_) {
      std::string mapped;
      for (char c : piece) mapped += byte_piece_[static_cast<unsigned char>(c)];
      if (auto it = vocab_.find(mapped); it != vocab_.end()) return {it->second};
    }
    struct Symbol {
      int32_t id;
      int prev, next;
    };
    std::vector<Symbol> symbols(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) {
      symbols[i] = {byte_id_[static_cast<unsigned char>(piece[i])], static_cast<int>(i) - 1,
                    i + 1 < piece.size() ? static_cast<int>(i) + 1 : -1};
    }
    struct Candidate {
      int32_t rank;
      int pos;
      int32_t left, right;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    auto consider = [&](int pos) {
      if (pos < 0 || symbols[pos].next < 0) return;
      const int32_t left = symbols[pos].id, right = symbols[symbols[pos].next].id;
      if (auto it = merges_.find(PairKey(left, right)); it != merges_.end()) {
        queue.push({it->second.rank, pos, left, right});
      }
    };
    for (size_t i = 0; i + 1 < piece.size(); ++i) consider(static_cast<int>(i));
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& s = symbols[c.pos];
      // Stale: a neighbour was merged since this pair was queued.
      if (s.id != c.left || s.next < 0 || symbols[s.next].id != c.right) continue;
      const int gone = s.next;
      s.id = merges_.at(PairKey(c.left, c.right)).result;
      s.next = symbols[gone].next;
      if (s.next >= 0) symbols[s.next].prev = c.pos;
      symbols[gone].id = -1;
      consider(s.prev);
      consider(c.pos);
    }
    std::vector<int32_t> out;
    for (int i = piece.empty() ? -1 : 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
    return out;
  }

  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };

  std::vector<std::string> pieces_;   // id -> piece as in the file (byte alphabet, or added content)
  std::vector<std::string> decoded_;  // id -> the bytes it decodes to
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int32_t> added_ids_;
  std::vector<AddedToken> added_;
  std::array<std::vector<const AddedToken*>, 256> added_by_first_byte_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int32_t, 256> byte_id_{};
  std::array<std::string, 256> byte_piece_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  int32_t unk_ = -1, bos_ = -1, eos_ = -1, pad_ = -1;
  mutable std::array<CacheShard, 64> cache_;
};

// Small helpers for reading untrusted JSON: every error names the field.
class Reader {
 public:
  explicit Reader(std::string name) : name_(std::move(name)) {}
  absl::Status Error(const std::string& field, const std::string& message) const {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", field, ": ", message));
  }
  // A string field; absent or null gives `fallback`.
  absl::StatusOr<std::string> String(const Json& object, const std::string& key, const std::string& field,
                                     const std::string& fallback = "") const {
    if (!object.contains(key) || object[key].is_null()) return fallback;
    if (!object[key].is_string()) return Error(field, "expected a string");
    return object[key].get<std::string>();
  }
  absl::StatusOr<bool> Bool(const Json& object, const std::string& key, const std::string& field,
                            bool fallback) const {
    if (!object.contains(key) || object[key].is_null()) return fallback;
    if (!object[key].is_boolean()) return Error(field, "expected true or false");
    return object[key].get<bool>();
  }

 private:
  std::string name_;
};

// The pattern of pre_tokenizer (a ByteLevel with use_regex, or a Sequence of Split + ByteLevel)
// and the field it came from.
absl::StatusOr<std::pair<std::string, std::string>> PreTokenizerPattern(const Json& root, const Reader& r) {
  if (!root.contains("pre_tokenizer") || !root["pre_tokenizer"].is_object()) {
    return r.Error("pre_tokenizer", "missing: a byte-level BPE needs a ByteLevel pre-tokenizer");
  }
  const Json& pre = root["pre_tokenizer"];
  auto check_byte_level = [&](const Json& b, const std::string& field, bool want_regex) -> absl::Status {
    bool prefix = false, use_regex = true;
    LOOM_ASSIGN_OR_RETURN(prefix, r.Bool(b, "add_prefix_space", field + ".add_prefix_space", false));
    LOOM_ASSIGN_OR_RETURN(use_regex, r.Bool(b, "use_regex", field + ".use_regex", true));
    if (prefix)
      return r.Error(field + ".add_prefix_space", "true is not supported (it changes the text: use false)");
    if (use_regex != want_regex) {
      return r.Error(field + ".use_regex", want_regex
                                               ? "must be true (a lone ByteLevel splits with GPT-2's pattern)"
                                               : "must be false after a Split (the text is split once)");
    }
    return absl::OkStatus();
  };
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    LOOM_RETURN_IF_ERROR(check_byte_level(pre, "pre_tokenizer", true));
    return std::make_pair(std::string(kGpt2Pattern), std::string("pre_tokenizer.use_regex"));
  }
  if (type != "Sequence") {
    return r.Error("pre_tokenizer.type", absl::StrCat(Quoted(type),
                                                      " is not supported: use ByteLevel, or a "
                                                      "Sequence of Split and ByteLevel"));
  }
  if (!pre.contains("pretokenizers") || !pre["pretokenizers"].is_array() ||
      pre["pretokenizers"].size() != 2) {
    return r.Error("pre_tokenizer.pretokenizers", "expected [Split, ByteLevel]");
  }
  const Json& split = pre["pretokenizers"][0];
  const Json& byte_level = pre["pretokenizers"][1];
  if (!split.is_object() || split.value("type", "") != "Split") {
    return r.Error("pre_tokenizer.pretokenizers[0].type", "expected \"Split\"");
  }
  if (!byte_level.is_object() || byte_level.value("type", "") != "ByteLevel") {
    return r.Error("pre_tokenizer.pretokenizers[1].type", "expected \"ByteLevel\"");
  }
  LOOM_RETURN_IF_ERROR(check_byte_level(byte_level, "pre_tokenizer.pretokenizers[1]", false));
  std::string behavior;
  LOOM_ASSIGN_OR_RETURN(behavior,
                        r.String(split, "behavior", "pre_tokenizer.pretokenizers[0].behavior", "Isolated"));
  if (behavior != "Isolated") {
    return r.Error("pre_tokenizer.pretokenizers[0].behavior",
                   Quoted(behavior) + " is not supported: use \"Isolated\"");
  }
  bool invert = false;
  LOOM_ASSIGN_OR_RETURN(invert, r.Bool(split, "invert", "pre_tokenizer.pretokenizers[0].invert", false));
  if (invert) return r.Error("pre_tokenizer.pretokenizers[0].invert", "true is not supported");
  if (!split.contains("pattern") || !split["pattern"].is_object() || !split["pattern"].contains("Regex") ||
      !split["pattern"]["Regex"].is_string()) {
    return r.Error("pre_tokenizer.pretokenizers[0].pattern", "expected {\"Regex\": \"...\"}");
  }
  return std::make_pair(split["pattern"]["Regex"].get<std::string>(),
                        std::string("pre_tokenizer.pretokenizers[0].pattern.Regex"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TokenizerBackend>> LoadByteLevelBpe(std::string_view text,
                                                                   const std::string& name) {
  const Reader r(name);
  if (text.size() > kMaxTokenizerJsonBytes) {
    return r.Error("file",
                   absl::StrCat(text.size(), " bytes is more than the limit of ", kMaxTokenizerJsonBytes));
  }
  const Json root = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not a JSON object (expected a Hugging Face tokenizer.json)"));
  }
  auto bpe = std::make_unique<ByteLevelBpe>();

  // model
  if (!root.contains("model") || !root["model"].is_object())
    return r.Error("model", "missing or not an object");
  const Json& model = root["model"];
  std::string type;
  LOOM_ASSIGN_OR_RETURN(type, r.String(model, "type", "model.type"));
  if (type != "BPE")
    return r.Error("model.type", Quoted(type) + " is not supported: Loom reads BPE models only");
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0)) {
    return r.Error("model.dropout",
                   "BPE dropout is not supported (encoding must be deterministic): use null");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    std::string value;
    LOOM_ASSIGN_OR_RETURN(value, r.String(model, key, absl::StrCat("model.", key)));
    if (!value.empty())
      return r.Error(absl::StrCat("model.", key), "is not supported in a byte-level BPE: use null");
  }
  bool byte_fallback = false;
  LOOM_ASSIGN_OR_RETURN(byte_fallback, r.Bool(model, "byte_fallback", "model.byte_fallback", false));
  if (byte_fallback)
    return r.Error("model.byte_fallback", "true is not supported (byte-level BPE needs none)");
  LOOM_ASSIGN_OR_RETURN(bpe->ignore_merges_, r.Bool(model, "ignore_merges", "model.ignore_merges", false));

  if (!model.contains("vocab") || !model["vocab"].is_object())
    return r.Error("model.vocab", "missing or not an object");
  if (model["vocab"].size() > static_cast<size_t>(kMaxBpeVocab)) {
    return r.Error("model.vocab",
                   absl::StrCat(model["vocab"].size(), " pieces is more than the limit of ", kMaxBpeVocab));
  }
  std::vector<std::string>& pieces = bpe->pieces_;
  std::vector<bool> from_vocab;
  auto place = [&](int64_t id, const std::string& piece, const std::string& field) -> absl::Status {
    if (id < 0 || id >= kMaxBpeVocab) {
      return r.Error(field, absl::StrCat("id ", id, " is out of range [0, ", kMaxBpeVocab, ")"));
    }
    if (piece.empty() || piece.size() > static_cast<size_t>(kMaxBpePieceBytes)) {
      return r.Error(field, absl::StrCat("a piece must have 1 to ", kMaxBpePieceBytes, " bytes"));
    }
    if (static_cast<size_t>(id) >= pieces.size()) {
      pieces.resize(id + 1);
      from_vocab.resize(id + 1, false);
    }
    return absl::OkStatus();
  };
  for (const auto& [piece, id] : model["vocab"].items()) {
    const std::string field = "model.vocab[" + Quoted(piece) + "]";
    if (!id.is_number_integer()) return r.Error(field, "expected an integer id");
    LOOM_RETURN_IF_ERROR(place(id.get<int64_t>(), piece, field));
    const int32_t i = static_cast<int32_t>(id.get<int64_t>());
    if (!pieces[i].empty()) return r.Error(field, absl::StrCat("id ", i, " is also ", Quoted(pieces[i])));
    pieces[i] = piece;
    from_vocab[i] = true;
    bpe->vocab_[piece] = i;
  }

  // added_tokens: their ids may extend the vocabulary (Llama-3) or repeat a vocab entry (GPT-2).
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    if (!root["added_tokens"].is_array()) return r.Error("added_tokens", "expected an array");
    if (root["added_tokens"].size() > 1 << 20) return r.Error("added_tokens", "more than 1048576 entries");
    for (size_t k = 0; k < root["added_tokens"].size(); ++k) {
      const Json& t = root["added_tokens"][k];
      const std::string field = absl::StrCat("added_tokens[", k, "]");
      if (!t.is_object()) return r.Error(field, "expected an object");
      if (!t.contains("id") || !t["id"].is_number_integer())
        return r.Error(field + ".id", "expected an integer");
      std::string content;
      LOOM_ASSIGN_OR_RETURN(content, r.String(t, "content", field + ".content"));
      LOOM_RETURN_IF_ERROR(place(t["id"].get<int64_t>(), content, field + ".content"));
      for (const char* flag : {"single_word", "lstrip", "rstrip"}) {
        bool on = false;
        LOOM_ASSIGN_OR_RETURN(on, r.Bool(t, flag, field + "." + flag, false));
        if (on) return r.Error(field + "." + flag, "true is not supported: use false");
      }
      const int32_t id = static_cast<int32_t>(t["id"].get<int64_t>());
      if (!pieces[id].empty() && pieces[id] != content) {
        return r.Error(field + ".id",
                       absl::StrCat(id, " is model.vocab's ", Quoted(pieces[id]), ", not ", Quoted(content)));
      }
      if (bpe->added_ids_.count(content) != 0)
        return r.Error(field + ".content", Quoted(content) + " is added twice");
      pieces[id] = content;
      bpe->added_ids_[content] = id;
      bpe->added_.push_back({content, id});
    }
  }
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (pieces[id].empty()) {
      return r.Error("model.vocab", absl::StrCat("no piece has id ", id, " (ids must be dense from 0 to ",
                                                 pieces.size() - 1, ", counting added_tokens)"));
    }
  }
  if (pieces.empty()) return r.Error("model.vocab", "is empty");
  for (const AddedToken& t : bpe->added_) {
    bpe->added_by_first_byte_[static_cast<unsigned char>(t.content[0])].push_back(&t);
  }
  for (auto& candidates : bpe->added_by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->content.size() > b->content.size();
    });
  }

  // The byte alphabet: every byte must have its piece, and every piece decodes through it.
  const std::array<uint32_t, 256> byte_cp = ByteToCodepoint();
  std::unordered_map<uint32_t, unsigned char> cp_byte;
  for (int b = 0; b < 256; ++b) {
    AppendUtf8(byte_cp[b], &bpe->byte_piece_[b]);
    cp_byte[byte_cp[b]] = static_cast<unsigned char>(b);
    auto it = bpe->vocab_.find(bpe->byte_piece_[b]);
    if (it == bpe->vocab_.end()) {
      return r.Error("model.vocab", absl::StrCat("has no piece for byte 0x", absl::Hex(b, absl::kZeroPad2),
                                                 " (", Quoted(bpe->byte_piece_[b]),
                                                 "): a byte-level BPE vocabulary holds all 256 byte pieces"));
    }
    bpe->byte_id_[b] = it->second;
  }
  bpe->decoded_.resize(pieces.size());
  for (size_t id = 0; id < pieces.size(); ++id) {
    if (bpe->added_ids_.count(pieces[id]) != 0 &&
        bpe->added_ids_.at(pieces[id]) == static_cast<int32_t>(id)) {
      bpe->decoded_[id] = pieces[id];
      continue;
    }
    // A character outside the byte alphabet (no trained vocabulary has one) decodes as itself.
    for (size_t i = 0; i < pieces[id].size();) {
      const uint32_t cp = NextCodepoint(pieces[id], &i);
      if (auto it = cp_byte.find(cp); it != cp_byte.end()) {
        bpe->decoded_[id].push_back(static_cast<char>(it->second));
      } else {
        AppendUtf8(cp, &bpe->decoded_[id]);
      }
    }
  }

  // merges: "a b" strings (older files) or ["a", "b"] pairs (newer ones); rank = position.
  if (!model.contains("merges") || !model["merges"].is_array())
    return r.Error("model.merges", "missing or not an array");
  const Json& merges = model["merges"];
  if (merges.size() > static_cast<size_t>(kMaxBpeMerges)) {
    return r.Error("model.merges",
                   absl::StrCat(merges.size(), " merges is more than the limit of ", kMaxBpeMerges));
  }
  for (size_t k = 0; k < merges.size(); ++k) {
    const std::string field = absl::StrCat("model.merges[", k, "]");
    std::string a, b;
    if (merges[k].is_string()) {
      const std::string m = merges[k].get<std::string>();
      const size_t space = m.find(' ');
      if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos) {
        return r.Error(field, Quoted(m) + " is not two pieces separated by one space");
      }
      a = m.substr(0, space);
      b = m.substr(space + 1);
    } else if (merges[k].is_array() && merges[k].size() == 2 && merges[k][0].is_string() &&
               merges[k][1].is_string()) {
      a = merges[k][0].get<std::string>();
      b = merges[k][1].get<std::string>();
    } else {
      return r.Error(field, "expected \"a b\" or [\"a\", \"b\"]");
    }
    const std::string shown = Quoted(a + " " + b);
    auto ia = bpe->vocab_.find(a), ib = bpe->vocab_.find(b), ir = bpe->vocab_.find(a + b);
    if (ia == bpe->vocab_.end())
      return r.Error(field, absl::StrCat(shown, ": ", Quoted(a), " is not in model.vocab"));
    if (ib == bpe->vocab_.end())
      return r.Error(field, absl::StrCat(shown, ": ", Quoted(b), " is not in model.vocab"));
    if (ir == bpe->vocab_.end()) {
      return r.Error(field, absl::StrCat(shown, ": the result ", Quoted(a + b), " is not in model.vocab"));
    }
    // A merge listed twice takes its last rank: the `tokenizers` library builds its map from the
    // list in order, and a later entry replaces an earlier one.
    bpe->merges_.insert_or_assign(ByteLevelBpe::PairKey(ia->second, ib->second),
                                  Merge{static_cast<int32_t>(k), ir->second});
  }

  // normalizer: none or NFC (Qwen2).
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const Json& n = root["normalizer"];
    const std::string ntype = n.is_object() ? n.value("type", "") : "";
    if (ntype != "NFC")
      return r.Error("normalizer.type", Quoted(ntype) + " is not supported: use null or \"NFC\"");
    bpe->nfc_ = true;
  }
  LOOM_ASSIGN_OR_RETURN(const auto pattern, PreTokenizerPattern(root, r));
  LOOM_ASSIGN_OR_RETURN(bpe->pre_tokenizer_,
                        PreTokenizer::Create(pattern.first, absl::StrCat(name, ": ", pattern.second)));
  if (!root.contains("decoder") || !root["decoder"].is_object() ||
      root["decoder"].value("type", "") != "ByteLevel") {
    return r.Error("decoder",
                   "must be {\"type\": \"ByteLevel\"} (text is decoded through the byte alphabet)");
  }

  // Special ids by name (tokenizer.json does not say which is which).
  auto first_of = [&](std::initializer_list<const char*> names) -> int32_t {
    for (const char* n : names) {
      if (const int32_t id = bpe->PieceToId(n); id >= 0) return id;
    }
    return -1;
  };
  bpe->eos_ = first_of({"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"});
  if (bpe->eos_ < 0) {
    return r.Error("added_tokens",
                   "has no end-of-text token (one of <|endoftext|>, <|end_of_text|>, </s>, <eos>): "
                   "Loom ends every document with it");
  }
  bpe->bos_ = first_of({"<|begin_of_text|>", "<s>", "<bos>"});
  bpe->pad_ = first_of({"<|pad|>", "<pad>"});
  std::string unk;
  LOOM_ASSIGN_OR_RETURN(unk, r.String(model, "unk_token", "model.unk_token"));
  if (!unk.empty()) {
    bpe->unk_ = bpe->PieceToId(unk);
    if (bpe->unk_ < 0) return r.Error("model.unk_token", Quoted(unk) + " is not in model.vocab");
  }
  return std::unique_ptr<TokenizerBackend>(std::move(bpe));
}

}  // namespace loom::data::internal
