// Pipeline parallelism's pieces against the whole model: stage configs cut the layers evenly, and
// 2 or 3 Gloo stages (threads on loopback) running 1F1B over four micro-batches give the whole
// model's loss, gradients (a tied embedding's two copies summed) and gradient norm.
#include "worker/engine/parallel/pipeline_parallel.h"

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cross_entropy.h"
#include "tests/unit/engine/engine_test_util.h"
#include "tests/unit/engine/gloo_ranks.h"
#include "worker/engine/model/optimizer.h"
#include "worker/engine/model/random.h"
#include "worker/engine/parallel/tensor_parallel.h"

namespace loom::engine {
namespace {

// Three layers, the middle one with a sliding window (each stage keeps its layers' windows).
TransformerConfig ThreeLayers(bool tied) {
  TransformerConfig c = loom::testing::SmallTransformerConfig(3, tied);
  c.local_layer = {false, true, false};
  c.sliding_window = 4;
  return c;
}

std::vector<data::TokenBatch> MicroBatches(int count, int seq_len, int vocab) {
  std::vector<data::TokenBatch> out;
  Random rng(3);
  for (int m = 0; m < count; ++m) {
    data::TokenBatch b;
    b.batch_size = 1;
    b.seq_len = seq_len;
    for (int i = 0; i < seq_len; ++i) {
      b.inputs.push_back(static_cast<int32_t>(rng.NextU64() % vocab));
      b.targets.push_back(static_cast<int32_t>(rng.NextU64() % vocab));
    }
    out.push_back(b);
  }
  return out;
}


TEST(PipelineParallel, StagesCutTheLayersEvenly) {
  const TransformerConfig whole = ThreeLayers(false);
  const TransformerConfig a = *PipelineStageConfig(whole, 2, 0), b = *PipelineStageConfig(whole, 2, 1);
  EXPECT_EQ(a.first_layer, 0);
  EXPECT_EQ(a.layers, 2);
  EXPECT_TRUE(a.has_embedding);
  EXPECT_FALSE(a.has_head);
  EXPECT_EQ(b.first_layer, 2);
  EXPECT_EQ(b.layers, 1);
  EXPECT_FALSE(b.has_embedding);
  EXPECT_TRUE(b.has_head);
  EXPECT_EQ(b.local_layer, std::vector<bool>{false});
  EXPECT_EQ(a.local_layer, (std::vector<bool>{false, true}));
  // Layer names stay the whole model's, so checkpoints line up.
  EXPECT_NE(ParameterLayout(b).Find("model.layers.2.mlp.down_proj.weight"), nullptr);
  EXPECT_EQ(ParameterLayout(b).Find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(ParameterLayout(*PipelineStageConfig(ThreeLayers(true), 2, 1)).Find("model.embed_tokens.weight"),
            nullptr);
  const absl::StatusOr<TransformerConfig> too_many = PipelineStageConfig(whole, 4, 0);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("parallel.pp 4"), std::string::npos) << too_many.status();
}

void ExpectStagesComputeTheWholeModel(int pp, bool tied) {
  const TransformerConfig config = ThreeLayers(tied);
  const float scale = 0.01f;
  Transformer whole(config);
  whole.InitWeights(13);
  const std::vector<data::TokenBatch> mbs = MicroBatches(4, 10, config.vocab);
  double loss = 0;
  whole.ZeroGrads();
  for (const data::TokenBatch& mb : mbs) {
    float* logits = whole.Forward(mb);
    loss += kernels::cpu::CrossEntropy(logits, mb.targets.data(), mb.tokens(), config.vocab, scale, logits).loss_sum;
    whole.Backward(logits);
  }
  const double norm = GlobalGradNorm(whole.grads(), whole.num_params());

  std::vector<double> losses(pp), norms(pp);
  std::vector<std::vector<float>> grads(pp);
  const auto results = testing::OnGlooRanks(pp, [&](Communicator& group) -> absl::Status {
    const int r = group.rank();
    Transformer stage(*PipelineStageConfig(config, pp, r));
    ShardTensors(whole.layout(), whole.params(), stage.layout(), 0, 1, stage.params());
    stage.ZeroGrads();
    absl::StatusOr<double> l = RunOneForwardOneBackward(
        group, stage, mbs, [&](const data::TokenBatch& mb, float* logits) -> absl::StatusOr<double> {
          return kernels::cpu::CrossEntropy(logits, mb.targets.data(), mb.tokens(), config.vocab, scale, logits)
              .loss_sum;
        });
    if (!l.ok()) return l.status();
    losses[r] = *l;
    if (absl::Status s = SumTiedEmbeddingGrads(group, stage); !s.ok()) return s;
    absl::StatusOr<double> n = PipelineGradNorm(group, stage);
    if (!n.ok()) return n.status();
    norms[r] = *n;
    grads[r].assign(whole.num_params(), 0.0f);
    return GatherStages(group, config, stage.grads(), grads[r].data());
  });
  for (const absl::Status& s : results) ASSERT_TRUE(s.ok()) << s;
  EXPECT_NEAR(losses[pp - 1], loss, 1e-9 * loss) << "the last stage computes the loss";
  for (int r = 0; r < pp; ++r) {
    EXPECT_NEAR(norms[r], norm, 1e-6 * norm) << "rank " << r;
    for (const ParamTensor& t : whole.layout().tensors()) {
      EXPECT_LT(loom::testing::RelativeDifference(grads[r].data() + t.offset, whole.grads() + t.offset, t.size), 1e-6)
          << t.name << " rank " << r;
    }
  }
}

TEST(PipelineParallel, TwoStagesComputeTheWholeModelsLossAndGradients) { ExpectStagesComputeTheWholeModel(2, false); }
TEST(PipelineParallel, ThreeStagesWithATiedEmbeddingComputeTheWholeModel) {
  ExpectStagesComputeTheWholeModel(3, true);
}
TEST(PipelineParallel, TwoStagesWithATiedEmbeddingComputeTheWholeModel) { ExpectStagesComputeTheWholeModel(2, true); }

}  // namespace
}  // namespace loom::engine
