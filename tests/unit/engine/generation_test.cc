// The KV-cache decoder computes what the full forward pass computes, and sampling is
// deterministic in its seed and respects greedy / top-k.
#include "worker/engine/model/generator.h"

#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {

TransformerConfig SmallConfig(bool window) {
  loom::v1::ModelConfig m;
  m.set_layers(3);
  m.set_d_model(64);
  m.set_heads(4);
  m.set_kv_heads(2);
  m.set_ffn_size(96);
  m.set_vocab_size(97);
  m.set_rope_theta(10000);
  m.set_norm_eps(1e-5);
  if (window) {
    m.set_sliding_window(5);
    m.add_sliding_window_layers(0);
    m.add_sliding_window_layers(2);
  }
  auto c = TransformerConfig::FromProto(m);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// Teacher forcing: feeding a sequence token by token through the cache gives, at every
// position, the logits of the full (training) forward pass.
void ExpectCacheMatchesForward(bool window) {
  Transformer model(SmallConfig(window));
  model.InitWeights(7);
  const int batch = 2, len = 12, vocab = model.config().vocab;
  data::TokenBatch tb;
  tb.batch_size = batch;
  tb.seq_len = len;
  for (int i = 0; i < batch * len; ++i) tb.inputs.push_back((i * 31 + 5) % vocab);
  tb.targets = tb.inputs;
  const float* full = model.Forward(tb);
  std::vector<float> expected(full, full + int64_t{batch} * len * vocab);

  Generator gen(model, batch, len);
  gen.Reset(batch);
  double max_err = 0;
  for (int t = 0; t < len; ++t) {
    int32_t tokens[2] = {tb.inputs[t], tb.inputs[len + t]};
    const float* logits = gen.Step(tokens);
    for (int b = 0; b < batch; ++b)
      for (int v = 0; v < vocab; ++v)
        max_err = std::max<double>(
            max_err, std::abs(logits[b * vocab + v] - expected[(int64_t{b} * len + t) * vocab + v]));
  }
  EXPECT_LT(max_err, 1e-4) << "window=" << window;
  EXPECT_EQ(gen.position(), len);
}

TEST(Generator, CacheStepsEqualFullForward) { ExpectCacheMatchesForward(false); }
TEST(Generator, CacheStepsEqualFullForwardWithSlidingWindow) { ExpectCacheMatchesForward(true); }

TEST(Generator, GreedyPicksTheArgmaxOfTheForwardPass) {
  Transformer model(SmallConfig(false));
  model.InitWeights(3);
  Generator gen(model, 1, 32);
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 6;
  const std::vector<int32_t> prompt = {1, 2, 3, 4};
  auto out = gen.Generate({prompt}, greedy);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].size(), 6u);
  // Check each generated token against an argmax over a fresh full forward of the prefix.
  std::vector<int32_t> seq = prompt;
  for (int32_t token : out[0]) {
    data::TokenBatch tb;
    tb.batch_size = 1;
    tb.seq_len = static_cast<int>(seq.size());
    tb.inputs = seq;
    tb.targets = seq;
    const float* logits = model.Forward(tb);
    const int vocab = model.config().vocab;
    const float* last = logits + (seq.size() - 1) * vocab;
    EXPECT_EQ(token, std::max_element(last, last + vocab) - last);
    seq.push_back(token);
  }
}

TEST(Generator, SamplingIsDeterministicInTheSeedAndRespectsTopK) {
  Transformer model(SmallConfig(false));
  model.InitWeights(11);
  Generator gen(model, 3, 40);
  SamplingOptions s;
  s.temperature = 1.5f;
  s.top_k = 1;  // top-1 sampling is greedy whatever the temperature
  s.max_new_tokens = 8;
  const std::vector<std::vector<int32_t>> prompts = {{5, 6}, {7}, {8, 9, 10}};
  auto top1 = gen.Generate(prompts, s);
  SamplingOptions greedy = s;
  greedy.temperature = 0;
  greedy.top_k = 0;
  EXPECT_EQ(top1, gen.Generate(prompts, greedy));

  s.top_k = 0;
  s.top_p = 0.9f;
  s.seed = 42;
  auto a = gen.Generate(prompts, s);
  auto b = gen.Generate(prompts, s);
  EXPECT_EQ(a, b);
  s.seed = 43;
  auto c = gen.Generate(prompts, s);
  EXPECT_NE(a, c) << "a different seed should sample differently at temperature 1.5";
}

TEST(Generator, StopsAtTheStopToken) {
  Transformer model(SmallConfig(false));
  model.InitWeights(5);
  Generator gen(model, 1, 40);
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 10;
  auto free_run = gen.Generate({{1, 2}}, greedy);
  ASSERT_GE(free_run[0].size(), 3u);
  greedy.stop_token = free_run[0][2];
  auto stopped = gen.Generate({{1, 2}}, greedy);
  const auto first = std::find(free_run[0].begin(), free_run[0].end(), greedy.stop_token);
  EXPECT_EQ(stopped[0], std::vector<int32_t>(free_run[0].begin(), first + 1));
}

}  // namespace
}  // namespace loom::engine
