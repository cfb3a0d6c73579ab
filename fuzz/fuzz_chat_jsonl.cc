// Fuzzes chat and preference JSONL parsing (data/chat.h): each line as a conversation and as a
// preference pair, the whole input as a JSONL file through ReadConversations/ReadPreferences,
// and every parsed conversation rendered through both templates.
#include <cstdint>
#include <string>
#include <string_view>

#include "data/chat.h"
#include "fuzz/fuzz_util.h"

namespace {

void Render(const loom::data::Conversation& conversation) {
  (void)loom::data::RenderText(conversation, loom::data::ChatTemplate::kChatML);
  (void)loom::data::RenderText(conversation, loom::data::ChatTemplate::kAlpaca);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    if (auto conversation = loom::data::ParseConversation(line); conversation.ok()) Render(*conversation);
    if (auto pair = loom::data::ParsePreference(line); pair.ok()) {
      Render(pair->prompt);
      Render(pair->chosen);
      Render(pair->rejected);
    }
    start = end + 1;
  }
  static const std::string path = loom::fuzz::TempDir() + "/chat.jsonl";
  loom::fuzz::WriteBytes(path, data, size);
  (void)loom::data::ReadConversations(path);
  (void)loom::data::ReadPreferences(path);
  return 0;
}
