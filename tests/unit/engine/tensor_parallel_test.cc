// Tensor parallelism's pieces against the whole model: the split of every tensor round-trips;
// two Gloo ranks (threads on loopback) holding shards compute the whole model's logits, loss,
// gradients and gradient norm; a split the model does not allow names its field.
#include "worker/engine/parallel/tensor_parallel.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/cross_entropy.h"
#include "tests/unit/engine/engine_test_util.h"
#include "tests/unit/engine/gloo_ranks.h"
#include "worker/engine/model/optimizer.h"
#include "worker/engine/model/random.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {

TransformerConfig SmallConfig(bool tied) { return loom::testing::SmallTransformerConfig(2, tied); }

data::TokenBatch Batch(int batch, int seq_len, int vocab) {
  data::TokenBatch b;
  b.batch_size = batch;
  b.seq_len = seq_len;
  Random rng(5);
  for (int i = 0; i < batch * seq_len; ++i) {
    b.inputs.push_back(static_cast<int32_t>(rng.NextU64() % vocab));
    b.targets.push_back(i % 7 == 3 ? kernels::cpu::kIgnoreTarget : static_cast<int32_t>(rng.NextU64() % vocab));
  }
  return b;
}


TEST(TensorParallel, SplitsFollowMegatron) {
  EXPECT_EQ(SplitOf("model.layers.3.self_attn.q_proj.weight"), TensorSplit::kRows);
  EXPECT_EQ(SplitOf("model.layers.3.self_attn.k_proj.weight"), TensorSplit::kRows);
  EXPECT_EQ(SplitOf("model.layers.3.mlp.up_proj.weight"), TensorSplit::kRows);
  EXPECT_EQ(SplitOf("model.embed_tokens.weight"), TensorSplit::kRows);
  EXPECT_EQ(SplitOf("lm_head.weight"), TensorSplit::kRows);
  EXPECT_EQ(SplitOf("model.layers.0.self_attn.o_proj.weight"), TensorSplit::kColumns);
  EXPECT_EQ(SplitOf("model.layers.0.mlp.down_proj.weight"), TensorSplit::kColumns);
  EXPECT_EQ(SplitOf("model.layers.0.input_layernorm.weight"), TensorSplit::kReplicated);
  EXPECT_EQ(SplitOf("model.norm.weight"), TensorSplit::kReplicated);
}

TEST(TensorParallel, AnUnevenSplitNamesTheField) {
  TransformerConfig c = SmallConfig(false);
  c.vocab = 63;
  const absl::StatusOr<TransformerConfig> shard = TensorParallelConfig(c, 2);
  ASSERT_FALSE(shard.ok());
  EXPECT_NE(shard.status().message().find("model.vocab_size 63 is not divisible by parallel.tp 2"),
            std::string::npos)
      << shard.status();
  EXPECT_FALSE(TensorParallelConfig(SmallConfig(false), 4).ok());  // kv_heads 2
}

TEST(TensorParallel, ShardsGatherBackIntoTheWholeModel) {
  for (bool tied : {false, true}) {
    Transformer whole(SmallConfig(tied));
    whole.InitWeights(7);
    const TransformerConfig shard_config = *TensorParallelConfig(SmallConfig(tied), 2);
    const ParameterLayout shard_layout(shard_config);
    std::vector<float> gathered(2 * shard_layout.total());
    for (int r = 0; r < 2; ++r) {
      ShardTensors(whole.layout(), whole.params(), shard_layout, r, 2, gathered.data() + r * shard_layout.total());
    }
    // Rank 1's first q rows are the whole model's rows of head 2.
    const ParamTensor* q_whole = whole.layout().Find("model.layers.0.self_attn.q_proj.weight");
    const ParamTensor* q_shard = shard_layout.Find("model.layers.0.self_attn.q_proj.weight");
    EXPECT_EQ(gathered[shard_layout.total() + q_shard->offset], whole.params()[q_whole->offset + 2 * 8 * 32]);
    std::vector<float> back(whole.num_params(), 0.0f);
    UnshardTensors(whole.layout(), shard_layout, 2, gathered.data(), back.data());
    for (const ParamTensor& t : whole.layout().tensors()) {
      for (int64_t i = 0; i < t.size; ++i) {
        ASSERT_EQ(back[t.offset + i], whole.params()[t.offset + i]) << t.name << " " << i << " tied " << tied;
      }
    }
  }
}

// Two ranks, each with its shard, against the whole model on the same batch.
void ExpectShardsComputeTheWholeModel(bool tied) {
  const TransformerConfig config = SmallConfig(tied);
  Transformer whole(config);
  whole.InitWeights(11);
  const data::TokenBatch batch = Batch(2, 12, config.vocab);
  const int64_t rows = batch.tokens();
  float* dlogits = whole.Forward(batch);
  const std::vector<float> logits(dlogits, dlogits + rows * config.vocab);
  const double loss =
      kernels::cpu::CrossEntropy(dlogits, batch.targets.data(), rows, config.vocab, 0.05f, dlogits).loss_sum;
  whole.ZeroGrads();
  whole.Backward(dlogits);
  const double norm = GlobalGradNorm(whole.grads(), whole.num_params());

  std::vector<double> losses(2), norms(2);
  std::vector<std::vector<float>> grads(2);
  const auto results = testing::OnGlooRanks(2, [&](Communicator& group) -> absl::Status {
    const int r = group.rank();
    Transformer shard(*TensorParallelConfig(config, 2), &group);
    ShardTensors(whole.layout(), whole.params(), shard.layout(), r, 2, shard.params());
    absl::StatusOr<float*> out = shard.RunForward(batch);
    if (!out.ok()) return out.status();
    const int64_t local = config.vocab / 2;
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t v = 0; v < local; ++v) {
        const float expected = logits[i * config.vocab + r * local + v];
        if (std::abs((*out)[i * local + v] - expected) > 1e-4f * (1 + std::abs(expected))) {
          return absl::InternalError(absl::StrCat("rank ", r, " logit ", i, ",", v, ": ", (*out)[i * local + v],
                                                  " vs ", expected));
        }
      }
    }
    absl::StatusOr<double> l = VocabParallelCrossEntropy(group, *out, batch.targets.data(), rows, local,
                                                         shard.vocab_begin(), 0.05f, *out);
    if (!l.ok()) return l.status();
    losses[r] = *l;
    shard.ZeroGrads();
    if (absl::Status s = shard.RunBackward(*out); !s.ok()) return s;
    absl::StatusOr<double> n = TensorParallelGradNorm(group, shard.layout(), shard.grads());
    if (!n.ok()) return n.status();
    norms[r] = *n;
    grads[r].resize(whole.num_params());
    return GatherTensors(group, whole.layout(), shard.layout(), shard.grads(), grads[r].data());
  });
  for (const absl::Status& s : results) ASSERT_TRUE(s.ok()) << s;
  for (int r = 0; r < 2; ++r) {
    EXPECT_NEAR(losses[r], loss, 1e-5 * loss) << "rank " << r;
    EXPECT_NEAR(norms[r], norm, 1e-5 * norm) << "rank " << r;
    EXPECT_LT(loom::testing::RelativeDifference(grads[r].data(), whole.grads(), whole.num_params()), 1e-5) << "rank " << r;
    // Every tensor's gradient, not just the total: the norms and layers must all be right.
    for (const ParamTensor& t : whole.layout().tensors()) {
      EXPECT_LT(loom::testing::RelativeDifference(grads[r].data() + t.offset, whole.grads() + t.offset, t.size), 1e-4) << t.name;
    }
  }
}

TEST(TensorParallel, TwoRanksComputeTheWholeModelsLogitsLossAndGradients) { ExpectShardsComputeTheWholeModel(false); }
TEST(TensorParallel, TiedEmbeddingsSplitByVocabularyToo) { ExpectShardsComputeTheWholeModel(true); }

}  // namespace
}  // namespace loom::engine
