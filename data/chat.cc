#include "data/chat.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/confined_read.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "common/strings.h"
#include "data/shard.h"
#include "nlohmann/json.hpp"

namespace loom::data {
namespace {

constexpr char kAlpacaPreamble[] =
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.";
constexpr char kEos[] = "</s>";

absl::StatusOr<std::string> NormaliseRole(const std::string& role) {
  if (role == "system" || role == "user" || role == "assistant") return role;
  if (role == "human") return std::string("user");
  if (role == "gpt" || role == "model") return std::string("assistant");
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role '", role, "' (use system, user or assistant; ShareGPT: human, gpt)"));
}

absl::StatusOr<Conversation> MessagesFromJson(const nlohmann::json& list, const char* role_key,
                                              const char* text_key) {
  if (!list.is_array()) return absl::InvalidArgumentError("messages must be a JSON array");
  Conversation out;
  for (const nlohmann::json& m : list) {
    if (!m.is_object() || !m.contains(role_key) || !m.contains(text_key) || !m[role_key].is_string() ||
        !m[text_key].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("each message needs string fields \"", role_key, "\" and \"", text_key, "\""));
    }
    LOOM_ASSIGN_OR_RETURN(std::string role, NormaliseRole(m[role_key].get<std::string>()));
    out.push_back({std::move(role), m[text_key].get<std::string>()});
  }
  return out;
}

absl::StatusOr<nlohmann::json> ParseJson(std::string_view line) {
  nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!j.is_object()) return absl::InvalidArgumentError("a line must be a JSON object");
  return j;
}

// A field that is either a string (one turn of `role`) or a list of OpenAI messages.
absl::StatusOr<Conversation> TurnsFromJson(const nlohmann::json& j, const char* field, const char* role) {
  if (!j.contains(field)) return absl::InvalidArgumentError(absl::StrCat("missing field \"", field, "\""));
  const nlohmann::json& v = j[field];
  if (v.is_string()) return Conversation{{role, v.get<std::string>()}};
  absl::StatusOr<Conversation> turns = MessagesFromJson(v, "role", "content");
  if (!turns.ok())
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\": ", turns.status().message()));
  return turns;
}

template <typename T, typename Parse>
absl::StatusOr<std::vector<T>> ReadJsonl(const std::string& path, Parse parse) {
  // Confined to the read roots (a rank's; common/confined_read.h): checked on the opened file.
  LOOM_ASSIGN_OR_RETURN(ConfinedFile file, OpenConfined(path));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(::fdopen(file.fd(), "rb"), &std::fclose);
  if (in == nullptr) return ErrnoError("cannot open", path);
  file.Release();  // the FILE owns it now
  std::unique_ptr<char, void (*)(void*)> buffer(nullptr, &std::free);
  size_t capacity = 0;
  std::vector<T> out;
  for (int number = 1;; ++number) {
    char* raw = buffer.release();
    const ssize_t n = ::getline(&raw, &capacity, in.get());
    buffer.reset(raw);
    if (n < 0) {
      if (std::ferror(in.get())) return ErrnoError("cannot read", path);
      break;
    }
    std::string line(raw, static_cast<size_t>(n));
    if (!line.empty() && line.back() == '\n') line.pop_back();
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<T> item = parse(line);
    if (!item.ok())
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", item.status().message()));
    out.push_back(*std::move(item));
  }
  return out;
}

// Renders messages into spans. `alpaca_open` tracks whether an Alpaca preamble was written.
class SpanRenderer {
 public:
  explicit SpanRenderer(ChatTemplate tmpl) : tmpl_(tmpl) {}

  void Message(const ChatMessage& m, bool with_header = true) {
    const bool assistant = m.role == "assistant";
    if (tmpl_ == ChatTemplate::kChatML) {
      if (with_header) {
        Add(kImStart, false, true);
        Add(m.role + "\n", false);
      }
      Add(m.content, assistant);
      Add(kImEnd, assistant, true);
      Add("\n", false);
      return;
    }
    if (m.role == "system") {
      if (!opened_) Add(m.content, false);
      opened_ = true;
      return;
    }
    Open();
    if (assistant) {
      if (with_header) Header();
      Add(m.content, true);
      Add(kEos, true, true);
    } else {
      Add("\n\n### Instruction:\n" + m.content, false);
    }
  }

  // What comes before an assistant's content.
  void Header() {
    if (tmpl_ == ChatTemplate::kChatML) {
      Add(kImStart, false, true);
      Add("assistant\n", false);
    } else {
      Open();
      Add("\n\n### Response:\n", false);
    }
  }

  // For a completion rendered after its prompt: the Alpaca preamble is already written.
  void SkipPreamble() { opened_ = true; }

  std::vector<ChatSpan> Take() { return std::move(spans_); }

 private:
  void Open() {
    if (!opened_) Add(kAlpacaPreamble, false);
    opened_ = true;
  }
  void Add(std::string text, bool trained, bool special = false) {
    if (text.empty()) return;
    spans_.push_back({std::move(text), trained, special});
  }
  ChatTemplate tmpl_;
  bool opened_ = false;
  std::vector<ChatSpan> spans_;
};

// The id of a template's special piece. Alpaca's </s> is the tokenizer's end of text, whatever
// its spelling (<|endoftext|> in a GPT-2 style tokenizer.json).
int32_t SpecialId(const Tokenizer& tokenizer, std::string_view piece) {
  const int32_t id = tokenizer.PieceToId(piece);
  return id < 0 && piece == kEos ? tokenizer.eos_id() : id;
}

std::string MissingPiece(const Tokenizer& tokenizer, std::string_view piece) {
  return absl::StrCat("tokenizer ", tokenizer.path(), " has no piece ", std::string(piece),
                      tokenizer.kind() == "sentencepiece"
                          ? ": train it with `loom data prepare` (which adds the chat-template pieces)"
                          : ": a tokenizer.json needs it in added_tokens for this chat template (Qwen2's has "
                            "<|im_start|> and <|im_end|>), or use a template whose pieces it has");
}

absl::Status EncodeSpans(const std::vector<ChatSpan>& spans, const Tokenizer& tokenizer,
                         std::vector<int32_t>* tokens, std::vector<uint8_t>* mask) {
  for (const ChatSpan& span : spans) {
    if (span.special) {
      const int32_t id = SpecialId(tokenizer, span.text);
      if (id < 0) return absl::FailedPreconditionError(MissingPiece(tokenizer, span.text));
      tokens->push_back(id);
      mask->push_back(span.trained ? 1 : 0);
      continue;
    }
    const std::vector<int32_t> ids = tokenizer.Encode(span.text);
    tokens->insert(tokens->end(), ids.begin(), ids.end());
    mask->insert(mask->end(), ids.size(), span.trained ? 1 : 0);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ChatTemplate> ParseChatTemplate(std::string_view name) {
  if (name == "chatml") return ChatTemplate::kChatML;
  if (name == "alpaca") return ChatTemplate::kAlpaca;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template '", AbslView(name), "' (chatml or alpaca)"));
}

absl::StatusOr<Conversation> ParseConversation(std::string_view json_line) {
  LOOM_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json_line));
  absl::StatusOr<Conversation> out =
      absl::InvalidArgumentError("expected \"messages\" (OpenAI) or \"conversations\" (ShareGPT)");
  if (j.contains("messages")) {
    out = MessagesFromJson(j["messages"], "role", "content");
  } else if (j.contains("conversations")) {
    out = MessagesFromJson(j["conversations"], "from", "value");
  }
  if (out.ok() && (out->empty() || std::none_of(out->begin(), out->end(), [](const ChatMessage& m) {
                     return m.role == "assistant";
                   }))) {
    return absl::InvalidArgumentError("a conversation needs at least one assistant turn");
  }
  return out;
}

absl::StatusOr<std::vector<Conversation>> ReadConversations(const std::string& path) {
  return ReadJsonl<Conversation>(path, [](std::string_view line) { return ParseConversation(line); });
}

std::vector<ChatSpan> RenderSpans(const Conversation& conversation, ChatTemplate tmpl) {
  SpanRenderer r(tmpl);
  for (const ChatMessage& m : conversation) r.Message(m);
  return r.Take();
}

std::string RenderText(const Conversation& conversation, ChatTemplate tmpl) {
  std::string out;
  for (const ChatSpan& s : RenderSpans(conversation, tmpl)) out += s.text;
  return out;
}

std::string JinjaChatTemplate(ChatTemplate tmpl) {
  // Jinja string literals take Python's escapes: '\n' below is a newline once rendered.
  if (tmpl == ChatTemplate::kChatML) {
    return absl::StrCat("{% for message in messages %}{{ '", kImStart,
                        "' + message['role'] + '\\n' + message['content'] + '", kImEnd,
                        "' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '", kImStart,
                        "assistant\\n' }}{% endif %}");
  }
  // Alpaca: a leading system message replaces the preamble; later ones are dropped, as Loom does.
  // An assistant turn ends with the tokenizer's end of sequence, which Hugging Face passes to the
  // template as eos_token (</s>, or <|endoftext|> for a tokenizer.json).
  const std::string preamble = absl::StrCat("'", kAlpacaPreamble, "'");
  return absl::StrCat(
      "{% set ns = namespace(opened=false) %}"
      "{% for message in messages %}"
      "{% if message['role'] == 'system' %}"
      "{% if not ns.opened %}{{ message['content'] }}{% set ns.opened = true %}{% endif %}"
      "{% else %}"
      "{% if not ns.opened %}{{ ", preamble, " }}{% set ns.opened = true %}{% endif %}"
      "{% if message['role'] == 'assistant' %}{{ '\\n\\n### Response:\\n' + message['content'] + eos_token }}"
      "{% else %}{{ '\\n\\n### Instruction:\\n' + message['content'] }}{% endif %}"
      "{% endif %}"
      "{% endfor %}"
      "{% if add_generation_prompt %}{% if not ns.opened %}{{ ", preamble, " }}{% endif %}"
      "{{ '\\n\\n### Response:\\n' }}{% endif %}");
}

absl::StatusOr<TokenizedExample> TokenizeConversation(const Conversation& conversation, ChatTemplate tmpl,
                                                      const Tokenizer& tokenizer) {
  TokenizedExample out;
  LOOM_RETURN_IF_ERROR(EncodeSpans(RenderSpans(conversation, tmpl), tokenizer, &out.tokens, &out.loss_mask));
  return out;
}

TokenBatch PackExamples(const std::vector<TokenizedExample>& examples, int seq_len, int32_t pad_id, bool pack,
                        PackStats* stats) {
  PackStats local;
  PackStats& st = stats != nullptr ? *stats : local;
  TokenBatch batch;
  batch.seq_len = seq_len;
  int used = seq_len;  // positions filled in the current row; seq_len forces a new row
  int segment = 0;
  auto new_row = [&] {
    const size_t size = batch.inputs.size() + static_cast<size_t>(seq_len);
    batch.inputs.resize(size, pad_id);
    batch.targets.resize(size, kIgnoreIndex);
    batch.segment_ids.resize(size, 0);
    batch.positions.resize(size, 0);
    ++batch.batch_size;
    used = 0;
    segment = 0;
  };
  for (const TokenizedExample& ex : examples) {
    ++st.examples;
    int n = static_cast<int>(ex.tokens.size()) - 1;  // positions this example needs
    if (n <= 0) continue;
    if (n > seq_len) {
      n = seq_len;
      ++st.truncated;
    }
    if (!pack || used + n > seq_len) new_row();
    const size_t base = static_cast<size_t>(batch.batch_size - 1) * seq_len + used;
    ++segment;
    for (int t = 0; t < n; ++t) {
      batch.inputs[base + t] = ex.tokens[t];
      batch.targets[base + t] = ex.loss_mask[t + 1] ? ex.tokens[t + 1] : kIgnoreIndex;
      batch.segment_ids[base + t] = segment;
      batch.positions[base + t] = t;
    }
    used += n;
  }
  // Padding positions keep position 0 and segment 0: they attend only to one another.
  st.rows += batch.batch_size;
  int64_t filled = 0;
  for (int32_t s : batch.segment_ids) filled += s != 0;
  st.padding += static_cast<int64_t>(batch.segment_ids.size()) - filled;
  return batch;
}

absl::StatusOr<PreferencePair> ParsePreference(std::string_view json_line) {
  LOOM_ASSIGN_OR_RETURN(nlohmann::json j, ParseJson(json_line));
  PreferencePair pair;
  LOOM_ASSIGN_OR_RETURN(pair.prompt, TurnsFromJson(j, "prompt", "user"));
  LOOM_ASSIGN_OR_RETURN(pair.chosen, TurnsFromJson(j, "chosen", "assistant"));
  LOOM_ASSIGN_OR_RETURN(pair.rejected, TurnsFromJson(j, "rejected", "assistant"));
  if (pair.prompt.empty() || pair.prompt.back().role != "user") {
    return absl::InvalidArgumentError("field \"prompt\" must end with a user turn");
  }
  for (const Conversation* c : {&pair.chosen, &pair.rejected}) {
    if (c->empty() || c->front().role != "assistant") {
      return absl::InvalidArgumentError(
          "fields \"chosen\" and \"rejected\" must start with an assistant turn");
    }
  }
  return pair;
}

absl::StatusOr<std::vector<PreferencePair>> ReadPreferences(const std::string& path) {
  return ReadJsonl<PreferencePair>(path, [](std::string_view line) { return ParsePreference(line); });
}

absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const Conversation& prompt, ChatTemplate tmpl,
                                                    const Tokenizer& tokenizer) {
  SpanRenderer r(tmpl);
  for (const ChatMessage& m : prompt) r.Message(m);
  r.Header();
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  LOOM_RETURN_IF_ERROR(EncodeSpans(r.Take(), tokenizer, &tokens, &mask));
  return tokens;
}

absl::StatusOr<int32_t> EndOfTurnToken(ChatTemplate tmpl, const Tokenizer& tokenizer) {
  const char* piece = tmpl == ChatTemplate::kChatML ? kImEnd : kEos;
  const int32_t id = SpecialId(tokenizer, piece);
  if (id < 0) return absl::FailedPreconditionError(MissingPiece(tokenizer, piece));
  return id;
}

absl::StatusOr<PreferenceExample> TokenizePreference(const PreferencePair& pair, ChatTemplate tmpl,
                                                     const Tokenizer& tokenizer) {
  PreferenceExample out;
  LOOM_ASSIGN_OR_RETURN(out.prompt, TokenizePrompt(pair.prompt, tmpl, tokenizer));
  auto completion = [&](const Conversation& turns, std::vector<int32_t>* ids, std::vector<uint8_t>* mask) {
    SpanRenderer r(tmpl);
    // The Alpaca preamble was written with the prompt; the first turn's header too.
    r.SkipPreamble();
    for (size_t i = 0; i < turns.size(); ++i) r.Message(turns[i], /*with_header=*/i > 0);
    return EncodeSpans(r.Take(), tokenizer, ids, mask);
  };
  LOOM_RETURN_IF_ERROR(completion(pair.chosen, &out.chosen, &out.chosen_mask));
  LOOM_RETURN_IF_ERROR(completion(pair.rejected, &out.rejected, &out.rejected_mask));
  return out;
}

absl::Status WriteChatShards(const std::string& prefix, const std::vector<Conversation>& conversations,
                             ChatTemplate tmpl, const Tokenizer& tokenizer) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ShardWriter> tokens,
                        ShardWriter::Create(prefix + ".tokens.shard", tokenizer.hash(), tokenizer.vocab_size()));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ShardWriter> masks, ShardWriter::Create(prefix + ".mask.shard", tokenizer.hash(), 2));
  for (const Conversation& c : conversations) {
    LOOM_ASSIGN_OR_RETURN(TokenizedExample e, TokenizeConversation(c, tmpl, tokenizer));
    const std::vector<int32_t> mask(e.loss_mask.begin(), e.loss_mask.end());
    LOOM_RETURN_IF_ERROR(tokens->AddDocument(e.tokens));
    LOOM_RETURN_IF_ERROR(masks->AddDocument(mask));
  }
  LOOM_RETURN_IF_ERROR(tokens->Finish());
  return masks->Finish();
}

}  // namespace loom::data
