// The model-FLOPs estimate MFU uses: non-embedding parameters of known configurations, and the
// training / forward FLOPs per token with the attention term (and its sliding-window context).
#include "worker/engine/training/model_flops.h"

#include "gtest/gtest.h"

namespace loom::engine {
namespace {

TransformerConfig Resolve(const loom::v1::ModelConfig& m) {
  absl::StatusOr<TransformerConfig> c = TransformerConfig::FromProto(m);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.value_or(TransformerConfig{});
}

loom::v1::ModelConfig Tiny() {
  // The control-plane tests' model: head size 16, grouped-query attention with 2 kv heads.
  loom::v1::ModelConfig m;
  m.set_layers(2);
  m.set_d_model(64);
  m.set_heads(4);
  m.set_kv_heads(2);
  m.set_ffn_size(128);
  m.set_vocab_size(256);
  return m;
}

TEST(ModelFlopsTest, NonEmbeddingParametersOfLlama7BMatchItsPublishedCount) {
  // Llama 7B: 6.738 B parameters, of which 2 x 32000 x 4096 are the embedding and the head.
  loom::v1::ModelConfig m;
  m.set_layers(32);
  m.set_d_model(4096);
  m.set_heads(32);
  m.set_ffn_size(11008);
  m.set_vocab_size(32000);
  const TransformerConfig c = Resolve(m);
  EXPECT_EQ(NonEmbeddingParameters(c), int64_t{6'476'271'616});
  EXPECT_EQ(NonEmbeddingParameters(c) + 2 * int64_t{32000} * 4096, c.ParameterCount());
  // 6N + 12 x layers x d_model x seq_len at 2048 tokens: 45.3 GFLOP per trained token.
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 2048, ModelPass::kTraining),
                   6.0 * 6'476'271'616 + 12.0 * 32 * 4096 * 2048);
}

TEST(ModelFlopsTest, TrainingAndForwardFlopsPerTokenOfASmallGqaModel) {
  const TransformerConfig c = Resolve(Tiny());
  // Per layer: 2 norms (128) + q and o (2 x 64 x 64) + k and v (2 x 64 x 32) + SwiGLU (3 x 64 x 128).
  EXPECT_EQ(NonEmbeddingParameters(c), 2 * (128 + 8192 + 4096 + 24576) + 64);
  EXPECT_EQ(NonEmbeddingParameters(c), 74048);
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 128, ModelPass::kTraining), 6.0 * 74048 + 12.0 * 2 * 64 * 128);
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 128, ModelPass::kForward), 2.0 * 74048 + 4.0 * 2 * 64 * 128);
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 128, ModelPass::kTraining),
                   3 * ModelFlopsPerToken(c, 128, ModelPass::kForward));
  // Longer sequences cost more per token (attention), never less.
  EXPECT_GT(ModelFlopsPerToken(c, 256, ModelPass::kTraining),
            ModelFlopsPerToken(c, 128, ModelPass::kTraining));
}

TEST(ModelFlopsTest, SlidingWindowLayersAttendOverTheWindowOnly) {
  loom::v1::ModelConfig m = Tiny();
  m.set_sliding_window(32);
  m.set_sliding_window_period(2);  // layer 0 local, layer 1 global
  const TransformerConfig c = Resolve(m);
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 128, ModelPass::kTraining), 6.0 * 74048 + 12.0 * 64 * (32 + 128));
  // A window longer than the sequence changes nothing.
  EXPECT_DOUBLE_EQ(ModelFlopsPerToken(c, 16, ModelPass::kTraining), 6.0 * 74048 + 12.0 * 64 * (16 + 16));
}

}  // namespace
}  // namespace loom::engine
