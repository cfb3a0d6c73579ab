// Chat and preference data: JSONL conversations rendered through a chat template into token ids
// with a loss mask, packing of several examples into one sequence, and preference triples.
//
// Inputs (one JSON object a line):
//   OpenAI messages: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
//   ShareGPT:        {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
//   Preferences:     {"prompt": "..." | [messages], "chosen": "..." | [messages],
//                     "rejected": "..." | [messages]}   (strings are a user / assistant turn)
//
// Templates (byte for byte; tests/unit/data/chat_test.cc holds golden strings):
//   ChatML: "<|im_start|>{role}\n{content}<|im_end|>\n" per message.
//   Alpaca: "{system}\n\n### Instruction:\n{user}\n\n### Response:\n{assistant}</s>" with
//           further turns appended as "\n\n### Instruction:\n...". The default system text is
//           Alpaca's "Below is an instruction that describes a task. ...".
// The loss mask covers exactly the assistant turns' content and their end-of-turn token
// (<|im_end|> for ChatML, </s> for Alpaca), nothing of the headers or other roles.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "data/batch.h"
#include "data/tokenizer.h"

namespace loom::data {

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};
using Conversation = std::vector<ChatMessage>;

enum class ChatTemplate { kChatML, kAlpaca };
// "chatml" or "alpaca".
absl::StatusOr<ChatTemplate> ParseChatTemplate(std::string_view name);

// One JSON line in either format; roles are normalised (human -> user, gpt -> assistant).
absl::StatusOr<Conversation> ParseConversation(std::string_view json_line);
// A JSONL file; errors name the file and line.
absl::StatusOr<std::vector<Conversation>> ReadConversations(const std::string& path);

// A piece of rendered text. Special pieces (end-of-turn markers) are encoded as one token.
struct ChatSpan {
  std::string text;
  bool trained = false;  // in the loss
  bool special = false;  // `text` is one piece of the vocabulary (e.g. <|im_end|>, </s>)
};
std::vector<ChatSpan> RenderSpans(const Conversation& conversation, ChatTemplate tmpl);
// The spans' texts concatenated: what the model reads.
std::string RenderText(const Conversation& conversation, ChatTemplate tmpl);

struct TokenizedExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_mask;  // 1 where tokens[i] is predicted with loss
};
// The template in Jinja, as Hugging Face's tokenizer_config.json `chat_template` holds it (rendered
// with `messages` and `add_generation_prompt`): it renders the text RenderText renders, and with
// add_generation_prompt appends the assistant header TokenizePrompt ends with. `loom export-hf`
// writes it; tests/integration/hf_export_test.cc renders it with jinja2 and compares.
std::string JinjaChatTemplate(ChatTemplate tmpl);

// Encodes each span separately (so the mask has exact span boundaries).
absl::StatusOr<TokenizedExample> TokenizeConversation(const Conversation& conversation, ChatTemplate tmpl,
                                                      const Tokenizer& tokenizer);

// Example i becomes (tokens[0..n-2] -> tokens[1..n-1]): n - 1 positions whose targets are
// kIgnoreIndex where loss_mask[t + 1] is 0. Examples longer than seq_len + 1 tokens are cut.
struct PackStats {
  int64_t examples = 0;
  int64_t truncated = 0;
  int64_t rows = 0;
  int64_t padding = 0;  // positions holding no example
};
// Packs examples in order into rows of seq_len positions (a row takes examples while they fit).
// Each example in a row has its own segment id (1, 2, ...) and positions restarting at 0, so no
// token attends across examples; padding has segment 0, input pad_id and target kIgnoreIndex.
// With `pack` false every example gets a row of its own (the unpacked reference).
TokenBatch PackExamples(const std::vector<TokenizedExample>& examples, int seq_len, int32_t pad_id,
                        bool pack = true, PackStats* stats = nullptr);

struct PreferencePair {
  Conversation prompt;    // ends with a user turn
  Conversation chosen;    // assistant turn(s)
  Conversation rejected;  // assistant turn(s)
};
absl::StatusOr<PreferencePair> ParsePreference(std::string_view json_line);
absl::StatusOr<std::vector<PreferencePair>> ReadPreferences(const std::string& path);

// The prompt rendered up to and including the assistant header; chosen and rejected are the
// completions that follow it, each with its mask (1 on assistant content and end-of-turn).
struct PreferenceExample {
  std::vector<int32_t> prompt;
  std::vector<int32_t> chosen;
  std::vector<uint8_t> chosen_mask;
  std::vector<int32_t> rejected;
  std::vector<uint8_t> rejected_mask;
};
absl::StatusOr<PreferenceExample> TokenizePreference(const PreferencePair& pair, ChatTemplate tmpl,
                                                     const Tokenizer& tokenizer);

// A prompt for generation: `prompt` rendered up to and including the assistant header (the same
// tokens TokenizePreference puts before a completion).
absl::StatusOr<std::vector<int32_t>> TokenizePrompt(const Conversation& prompt, ChatTemplate tmpl,
                                                    const Tokenizer& tokenizer);
// Conversations as token shards (data/shard.h), one document each, the template applied:
// `<prefix>.tokens.shard` holds the tokens and `<prefix>.mask.shard` the assistant-only loss mask
// as 0/1 ids with the same document boundaries (a rejection_sampling stage's dataset keeps them
// beside its JSONL). Written atomically; both tagged with the tokenizer's hash.
absl::Status WriteChatShards(const std::string& prefix, const std::vector<Conversation>& conversations,
                             ChatTemplate tmpl, const Tokenizer& tokenizer);

// The token that ends an assistant turn (<|im_end|> or </s>): where generation stops.
absl::StatusOr<int32_t> EndOfTurnToken(ChatTemplate tmpl, const Tokenizer& tokenizer);

}  // namespace loom::data
