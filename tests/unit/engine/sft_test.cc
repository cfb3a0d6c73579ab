// SFT losses through the engine: a chat's loss is the mean over exactly its assistant tokens
// (content and end-of-turn), and packing several examples into one row, with segments and
// restarted positions, gives the same loss as one example per row.
#include <cmath>

#include <gtest/gtest.h>

#include "data/chat.h"
#include "kernels/cpu/cross_entropy.h"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {

using data::ChatMessage;
using data::Conversation;

Transformer Model(int vocab) {
  loom::v1::ModelConfig m;
  m.set_layers(2);
  m.set_d_model(32);
  m.set_heads(4);
  m.set_kv_heads(2);
  m.set_ffn_size(64);
  m.set_vocab_size(vocab);
  Transformer t(*TransformerConfig::FromProto(m));
  t.InitWeights(21);
  return t;
}

std::unique_ptr<data::Tokenizer> Tok() {
  auto t = data::Tokenizer::Load(data::testing::TinyTokenizerModel(320));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

// log softmax(logits)[target]
double LogProb(const float* logits, int vocab, int target) {
  double max = logits[0];
  for (int v = 1; v < vocab; ++v) max = std::max<double>(max, logits[v]);
  double sum = 0;
  for (int v = 0; v < vocab; ++v) sum += std::exp(logits[v] - max);
  return logits[target] - max - std::log(sum);
}

TEST(Sft, LossIsTheMeanOverExactlyTheAssistantTokens) {
  auto tokenizer = Tok();
  const Conversation chat = {{"system", "You add numbers."},
                             {"user", "What is 2 + 3?"},
                             {"assistant", "2 + 3 = 5."},
                             {"user", "And 10 + 7?"},
                             {"assistant", "17."}};
  auto example = data::TokenizeConversation(chat, data::ChatTemplate::kChatML, *tokenizer);
  ASSERT_TRUE(example.ok()) << example.status();
  const int n = static_cast<int>(example->tokens.size());
  const data::TokenBatch batch =
      data::PackExamples({*example}, n - 1, tokenizer->pad_id() < 0 ? 0 : tokenizer->pad_id(),
                         /*pack=*/false);
  Transformer model = Model(tokenizer->vocab_size());
  const float* logits = model.Forward(batch);
  const int vocab = tokenizer->vocab_size();
  // By hand: the next-token log-likelihood at every position whose target is an assistant token.
  double sum = 0;
  int counted = 0;
  for (int t = 0; t + 1 < n; ++t) {
    if (!example->loss_mask[t + 1]) continue;
    sum -= LogProb(logits + int64_t{t} * vocab, vocab, example->tokens[t + 1]);
    ++counted;
  }
  // The assistant spans: both answers and their <|im_end|>.
  const int32_t im_end = tokenizer->PieceToId("<|im_end|>");
  int ends = 0;
  for (int t = 0; t < n; ++t) ends += example->loss_mask[t] && example->tokens[t] == im_end;
  EXPECT_EQ(ends, 2);
  const auto r =
      kernels::cpu::CrossEntropy(logits, batch.targets.data(), batch.tokens(), vocab, 0.0f, nullptr);
  EXPECT_EQ(r.counted, counted);
  EXPECT_GT(counted, 4);
  EXPECT_NEAR(r.loss_sum / r.counted, sum / counted, 1e-5);
}

TEST(Sft, PackedAndUnpackedBatchesGiveTheSameLoss) {
  auto tokenizer = Tok();
  std::vector<data::TokenizedExample> examples;
  const char* answers[] = {"4.", "The answer is 12.", "9", "It is 100 - 1 = 99."};
  for (int i = 0; i < 4; ++i) {
    const Conversation chat = {{"user", "Question " + std::to_string(i) + "?"}, {"assistant", answers[i]}};
    auto e = data::TokenizeConversation(chat, data::ChatTemplate::kChatML, *tokenizer);
    ASSERT_TRUE(e.ok());
    examples.push_back(*e);
  }
  const int pad = tokenizer->pad_id() < 0 ? 0 : tokenizer->pad_id();
  data::PackStats packed_stats, unpacked_stats;
  const data::TokenBatch packed = data::PackExamples(examples, 96, pad, true, &packed_stats);
  const data::TokenBatch unpacked = data::PackExamples(examples, 96, pad, false, &unpacked_stats);
  EXPECT_LT(packed_stats.rows, unpacked_stats.rows) << "the examples should share rows when packed";
  const int vocab = tokenizer->vocab_size();
  Transformer model = Model(vocab);
  const auto a = kernels::cpu::CrossEntropy(model.Forward(packed), packed.targets.data(), packed.tokens(),
                                            vocab, 0.0f, nullptr);
  const auto b = kernels::cpu::CrossEntropy(model.Forward(unpacked), unpacked.targets.data(),
                                            unpacked.tokens(), vocab, 0.0f, nullptr);
  EXPECT_EQ(a.counted, b.counted);
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-4 * std::abs(b.loss_sum));
}

}  // namespace
}  // namespace loom::engine
