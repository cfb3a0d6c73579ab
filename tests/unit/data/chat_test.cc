#include "data/chat.h"
#include "data/shard.h"

#include <set>

#include "data/chat_sampler.h"

#include <map>
#include <string>
#include <vector>

#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using ::testing::HasSubstr;

const Conversation kTwoTurns = {{"system", "You are a careful math tutor."},
                                {"user", "What is 2 + 2?"},
                                {"assistant", "2 + 2 = 4."},
                                {"user", "And 3 * 5?"},
                                {"assistant", "3 * 5 = 15."}};

TEST(ChatTemplate, ChatMLMatchesGoldenStringByteForByte) {
  EXPECT_EQ(RenderText(kTwoTurns, ChatTemplate::kChatML),
            "<|im_start|>system\nYou are a careful math tutor.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
            "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n"
            "<|im_start|>user\nAnd 3 * 5?<|im_end|>\n"
            "<|im_start|>assistant\n3 * 5 = 15.<|im_end|>\n");
  EXPECT_EQ(RenderText({{"user", "hi"}, {"assistant", "hello"}}, ChatTemplate::kChatML),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n");
}

TEST(ChatTemplate, AlpacaMatchesGoldenStringByteForByte) {
  EXPECT_EQ(
      RenderText({{"user", "Add 2 and 2."}, {"assistant", "4"}}, ChatTemplate::kAlpaca),
      "Below is an instruction that describes a task. Write a response that appropriately completes the "
      "request.\n\n### Instruction:\nAdd 2 and 2.\n\n### Response:\n4</s>");
  EXPECT_EQ(
      RenderText(kTwoTurns, ChatTemplate::kAlpaca),
      "You are a careful math tutor.\n\n### Instruction:\nWhat is 2 + 2?\n\n### Response:\n2 + 2 = 4.</s>"
      "\n\n### Instruction:\nAnd 3 * 5?\n\n### Response:\n3 * 5 = 15.</s>");
}

TEST(ChatParse, OpenAIAndShareGPTGiveTheSameConversation) {
  auto openai = ParseConversation(
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]})");
  auto sharegpt = ParseConversation(
      R"({"conversations":[{"from":"system","value":"s"},{"from":"human","value":"q"},{"from":"gpt","value":"a"}]})");
  ASSERT_TRUE(openai.ok()) << openai.status();
  ASSERT_TRUE(sharegpt.ok()) << sharegpt.status();
  ASSERT_EQ(openai->size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((*openai)[i].role, (*sharegpt)[i].role);
    EXPECT_EQ((*openai)[i].content, (*sharegpt)[i].content);
  }
  EXPECT_THAT(std::string(ParseConversation("{").status().message()), HasSubstr("JSON"));
  EXPECT_THAT(
      std::string(ParseConversation(R"({"messages":[{"role":"robot","content":"x"}]})").status().message()),
      HasSubstr("robot"));
  EXPECT_FALSE(ParseConversation(R"({"messages":[{"role":"user","content":"x"}]})").ok());
}

class ChatTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::Load(testing::TinyTokenizerModel());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  // The decoded text of each maximal run of masked tokens.
  std::vector<std::string> MaskedRuns(const std::vector<int32_t>& tokens,
                                      const std::vector<uint8_t>& mask) const {
    std::vector<std::string> runs;
    std::vector<int32_t> run;
    for (size_t i = 0; i <= tokens.size(); ++i) {
      if (i < tokens.size() && mask[i]) {
        run.push_back(tokens[i]);
      } else if (!run.empty()) {
        runs.push_back(tok_->Decode(run));
        run.clear();
      }
    }
    return runs;
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(ChatTokensTest, MaskCoversExactlyTheAssistantTurnsAndEndOfTurn) {
  for (ChatTemplate tmpl : {ChatTemplate::kChatML, ChatTemplate::kAlpaca}) {
    auto ex = TokenizeConversation(kTwoTurns, tmpl, *tok_);
    ASSERT_TRUE(ex.ok()) << ex.status();
    ASSERT_EQ(ex->tokens.size(), ex->loss_mask.size());
    const std::string eot = tmpl == ChatTemplate::kChatML ? "<|im_end|>" : "";
    // SentencePiece decodes </s> (a control piece) to nothing; check its id instead.
    EXPECT_EQ(MaskedRuns(ex->tokens, ex->loss_mask),
              (std::vector<std::string>{"2 + 2 = 4." + eot, "3 * 5 = 15." + eot}));
    const int32_t end_id = tmpl == ChatTemplate::kChatML ? tok_->PieceToId(kImEnd) : tok_->eos_id();
    int end_tokens = 0, masked_ends = 0;
    for (size_t i = 0; i < ex->tokens.size(); ++i) {
      if (ex->tokens[i] != end_id) continue;
      ++end_tokens;
      masked_ends += ex->loss_mask[i];
    }
    EXPECT_EQ(masked_ends, 2);  // the assistant turns' end-of-turn tokens, not the others'
    EXPECT_EQ(end_tokens, tmpl == ChatTemplate::kChatML ? 5 : 2);
    if (tmpl == ChatTemplate::kChatML) {
      EXPECT_EQ(tok_->Decode(ex->tokens), RenderText(kTwoTurns, tmpl));
    }
  }
}

std::vector<TokenizedExample> SomeExamples(const Tokenizer& tok, int count) {
  std::vector<TokenizedExample> out;
  const auto sentences = testing::GeneratedSentences(2 * count, 3);
  for (int i = 0; i < count; ++i) {
    Conversation c = {{"user", sentences[2 * i]}, {"assistant", sentences[2 * i + 1]}};
    auto ex = TokenizeConversation(c, ChatTemplate::kChatML, tok);
    EXPECT_TRUE(ex.ok());
    out.push_back(*ex);
  }
  return out;
}

TEST_F(ChatTokensTest, ChatShardsHoldTheTokensAndTheMask) {
  const std::vector<Conversation> chats = {{{"user", "What is 2 + 3?"}, {"assistant", "2 + 3 = 5\nAnswer: 5"}},
                                           {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}}};
  testing::TempDir dir;
  const absl::Status written = WriteChatShards(dir / "part", chats, ChatTemplate::kChatML, *tok_);
  ASSERT_TRUE(written.ok()) << written;
  auto tokens = ShardReader::Open(dir / "part.tokens.shard", {tok_->hash(), tok_->vocab_size()});
  auto masks = ShardReader::Open(dir / "part.mask.shard");
  ASSERT_TRUE(tokens.ok() && masks.ok());
  ASSERT_EQ((*tokens)->doc_count(), 2);
  ASSERT_EQ((*masks)->doc_count(), 2);
  for (int d = 0; d < 2; ++d) {
    auto e = TokenizeConversation(chats[d], ChatTemplate::kChatML, *tok_);
    ASSERT_TRUE(e.ok());
    EXPECT_EQ((*tokens)->Document(d), e->tokens);
    EXPECT_EQ((*masks)->Document(d), std::vector<int32_t>(e->loss_mask.begin(), e->loss_mask.end()));
  }
}

TEST_F(ChatTokensTest, PackedExamplesEqualUnpackedOnes) {
  const auto examples = SomeExamples(*tok_, 40);
  constexpr int kSeqLen = 512;
  PackStats packed_stats;
  const TokenBatch packed = PackExamples(examples, kSeqLen, tok_->pad_id(), true, &packed_stats);
  const TokenBatch unpacked = PackExamples(examples, kSeqLen, tok_->pad_id(), false);
  ASSERT_EQ(unpacked.batch_size, 40);
  EXPECT_LT(packed.batch_size, 20) << "packing should share rows";
  EXPECT_EQ(packed_stats.truncated, 0);

  struct Content {
    std::vector<int32_t> inputs, targets, positions;
  };
  auto collect = [](const TokenBatch& b) {
    std::vector<Content> out;
    for (int r = 0; r < b.batch_size; ++r) {
      std::map<int32_t, Content> by_segment;
      for (int t = 0; t < b.seq_len; ++t) {
        const size_t i = static_cast<size_t>(r) * b.seq_len + t;
        if (b.segment_ids[i] == 0) {
          EXPECT_EQ(b.targets[i], kIgnoreIndex);
          continue;
        }
        Content& c = by_segment[b.segment_ids[i]];
        c.inputs.push_back(b.inputs[i]);
        c.targets.push_back(b.targets[i]);
        c.positions.push_back(b.positions[i]);
      }
      for (auto& [segment, c] : by_segment) out.push_back(std::move(c));
    }
    return out;
  };
  const std::vector<Content> a = collect(packed), b = collect(unpacked);
  ASSERT_EQ(a.size(), b.size());
  for (size_t e = 0; e < a.size(); ++e) {
    EXPECT_EQ(a[e].inputs, b[e].inputs) << "example " << e;
    EXPECT_EQ(a[e].targets, b[e].targets) << "example " << e;
    EXPECT_EQ(a[e].positions, b[e].positions) << "example " << e;
    EXPECT_EQ(a[e].positions.front(), 0) << "positions restart in each example";
    // The content is the example itself, shifted by one, with its mask.
    const TokenizedExample& ex = examples[e];
    ASSERT_EQ(a[e].inputs.size() + 1, ex.tokens.size());
    for (size_t t = 0; t < a[e].inputs.size(); ++t) {
      EXPECT_EQ(a[e].inputs[t], ex.tokens[t]);
      EXPECT_EQ(a[e].targets[t], ex.loss_mask[t + 1] ? ex.tokens[t + 1] : kIgnoreIndex);
    }
  }
}

TEST_F(ChatTokensTest, LongExamplesAreTruncatedAndCounted) {
  const auto examples = SomeExamples(*tok_, 3);
  PackStats stats;
  const TokenBatch b = PackExamples(examples, 8, tok_->pad_id(), true, &stats);
  EXPECT_EQ(stats.truncated, 3);
  EXPECT_EQ(b.batch_size, 3);
}

TEST_F(ChatTokensTest, PreferencePairsBecomePromptChosenRejectedTriples) {
  auto pair = ParsePreference(
      R"({"prompt":"What is 6 * 7?","chosen":"6 * 7 = 42. Answer: 42","rejected":"6 * 7 = 48. Answer: 48"})");
  ASSERT_TRUE(pair.ok()) << pair.status();
  for (ChatTemplate tmpl : {ChatTemplate::kChatML, ChatTemplate::kAlpaca}) {
    auto ex = TokenizePreference(*pair, tmpl, *tok_);
    ASSERT_TRUE(ex.ok()) << ex.status();
    // prompt ++ chosen is exactly the rendered conversation.
    std::vector<int32_t> full = ex->prompt;
    full.insert(full.end(), ex->chosen.begin(), ex->chosen.end());
    Conversation conv = pair->prompt;
    conv.push_back(pair->chosen[0]);
    auto reference = TokenizeConversation(conv, tmpl, *tok_);
    ASSERT_TRUE(reference.ok());
    EXPECT_EQ(full, reference->tokens);
    const std::string eot = tmpl == ChatTemplate::kChatML ? "<|im_end|>" : "";
    EXPECT_EQ(MaskedRuns(ex->chosen, ex->chosen_mask),
              std::vector<std::string>{"6 * 7 = 42. Answer: 42" + eot});
    EXPECT_EQ(MaskedRuns(ex->rejected, ex->rejected_mask),
              std::vector<std::string>{"6 * 7 = 48. Answer: 48" + eot});
  }
  EXPECT_THAT(std::string(ParsePreference(R"({"prompt":"q","chosen":"a"})").status().message()),
              HasSubstr("rejected"));
}

// A JSONL file of `count` OpenAI-messages conversations.
std::string WriteConversations(const testing::TempDir& dir, int count) {
  const auto sentences = testing::GeneratedSentences(2 * count, 9);
  std::string jsonl;
  for (int i = 0; i < count; ++i) {
    jsonl += R"({"messages":[{"role":"user","content":")" + sentences[2 * i] +
             R"("},{"role":"assistant","content":")" + sentences[2 * i + 1] + "\"}]}\n";
  }
  testing::WriteText(dir / "sft.jsonl", jsonl);
  return dir / "sft.jsonl";
}

TEST_F(ChatTokensTest, ChatSamplerIsResumableAndTheSameOnAnyNumberOfRanks) {
  testing::TempDir dir;
  ChatSamplerOptions options{WriteConversations(dir, 50), ChatTemplate::kChatML, true, 11};
  auto run = [&](ChatSampler& s, int batches, int rank, int ranks) {
    std::vector<TokenBatch> out;
    for (int b = 0; b < batches; ++b) {
      TokenBatch batch;
      EXPECT_TRUE(s.NextBatch(256, 8, rank, ranks, &batch).ok());
      out.push_back(std::move(batch));
    }
    return out;
  };
  auto reference = ChatSampler::Open(options, *tok_);
  ASSERT_TRUE(reference.ok()) << reference.status();
  const std::vector<TokenBatch> all = run(**reference, 12, 0, 1);
  EXPECT_GT((*reference)->epoch(), 0) << "12 batches should wrap the 50 examples";

  auto first = ChatSampler::Open(options, *tok_);
  run(**first, 5, 0, 1);
  auto resumed = ChatSampler::Open(options, *tok_);
  ASSERT_TRUE((*resumed)->RestoreState((*first)->SaveState()).ok());
  const std::vector<TokenBatch> rest = run(**resumed, 7, 0, 1);
  for (int b = 5; b < 12; ++b) {
    EXPECT_EQ(rest[b - 5].inputs, all[b].inputs) << "batch " << b;
    EXPECT_EQ(rest[b - 5].targets, all[b].targets) << "batch " << b;
    EXPECT_EQ(rest[b - 5].segment_ids, all[b].segment_ids) << "batch " << b;
  }

  std::vector<std::vector<TokenBatch>> ranks;
  for (int r = 0; r < 4; ++r) {
    auto s = ChatSampler::Open(options, *tok_);
    ranks.push_back(run(**s, 12, r, 4));
  }
  for (int b = 0; b < 12; ++b) {
    std::vector<int32_t> inputs, positions;
    for (int r = 0; r < 4; ++r) {
      inputs.insert(inputs.end(), ranks[r][b].inputs.begin(), ranks[r][b].inputs.end());
      positions.insert(positions.end(), ranks[r][b].positions.begin(), ranks[r][b].positions.end());
    }
    EXPECT_EQ(inputs, all[b].inputs) << "batch " << b;
    EXPECT_EQ(positions, all[b].positions) << "batch " << b;
  }
}

TEST_F(ChatTokensTest, ChatSamplerWithoutPackingServesEachExampleOncePerEpoch) {
  testing::TempDir dir;
  ChatSamplerOptions options{WriteConversations(dir, 20), ChatTemplate::kChatML, false, 3};
  auto sampler = ChatSampler::Open(options, *tok_);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  std::vector<std::vector<int32_t>> epochs;
  for (int e = 0; e < 2; ++e) {
    TokenBatch batch;
    ASSERT_TRUE((*sampler)->NextBatch(512, 20, 0, 1, &batch).ok());
    std::set<std::vector<int32_t>> rows;
    std::vector<int32_t> firsts;
    for (int r = 0; r < 20; ++r) {
      const auto begin = batch.inputs.begin() + r * 512;
      rows.insert(std::vector<int32_t>(begin, begin + 512));
      firsts.push_back(batch.targets[r * 512 + 40]);
      for (int t = 0; t < 512; ++t) EXPECT_LE(batch.segment_ids[r * 512 + t], 1);
    }
    EXPECT_EQ(rows.size(), 20u) << "every example once in epoch " << e;
    epochs.push_back(firsts);
  }
  EXPECT_EQ((*sampler)->epoch(), 2);
  EXPECT_NE(epochs[0], epochs[1]) << "the order is reshuffled each epoch";
}

}  // namespace
}  // namespace loom::data
