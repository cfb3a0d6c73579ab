// Averaging and merging: known answers for every method (the published formulas), and whole
// checkpoints merged tensor by tensor with architecture checks.
#include "worker/engine/model/merge.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/model/transformer.h"

namespace loom::engine {
namespace {

std::vector<float> Merge(const std::vector<std::vector<float>>& inputs, const std::vector<float>& base,
                         const MergeOptions& o) {
  std::vector<const float*> views;
  for (const auto& v : inputs) views.push_back(v.data());
  std::vector<float> out(inputs[0].size());
  absl::Status s = MergeTensors(views, base.empty() ? nullptr : base.data(), o, 1, &out);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "entry " << i;
}

TEST(Merge, LinearIsTheWeightedMean) {
  MergeOptions o;
  ExpectNear(Merge({{1, 2, 3}, {3, 6, -3}}, {}, o), {2, 4, 0});
  o.weights = {3, 1};
  ExpectNear(Merge({{1, 2, 3}, {3, 6, -3}}, {}, o), {1.5, 3, 1.5});
}

TEST(Merge, AverageOfOneIsBitwiseTheInput) {
  const std::vector<float> x = {0.1f, -3.7e-8f, 1234.5678f, 1e30f};
  EXPECT_EQ(Merge({x}, {}, MergeOptions{}), x);
}

TEST(Merge, EmaFollowsTheRecurrenceInOrder) {
  MergeOptions o;
  o.method = MergeMethod::kEma;
  o.ema_beta = 0.5;
  // ema = 0 → 0.5·0 + 0.5·4 = 2 → 0.5·2 + 0.5·8 = 5
  ExpectNear(Merge({{0}, {4}, {8}}, {}, o), {5});
}

TEST(Merge, TaskArithmeticScalesTheSumOfTaskVectors) {
  MergeOptions o;
  o.method = MergeMethod::kTaskArithmetic;
  o.lambda = 0.5;
  // base 1; deltas +2 and +4 → 1 + 0.5·6 = 4
  ExpectNear(Merge({{3}, {5}}, {1}, o), {4});
}

TEST(Merge, SlerpOfOrthogonalUnitVectorsAtHalf) {
  MergeOptions o;
  o.method = MergeMethod::kSlerp;
  o.t = 0.5;
  ExpectNear(Merge({{1, 0}, {0, 1}}, {}, o), {0.70710678f, 0.70710678f}, 1e-6);
  o.t = 0;
  ExpectNear(Merge({{1, 0}, {0, 1}}, {}, o), {1, 0});
}

TEST(Merge, SlerpFallsBackToLerpWhenNearlyColinear) {
  MergeOptions o;
  o.method = MergeMethod::kSlerp;
  o.t = 0.25;
  ExpectNear(Merge({{1, 1}, {2, 2.0001f}}, {}, o), {1.25f, 1.250025f}, 1e-6);
}

TEST(Merge, TiesKnownAnswerAtDensityOne) {
  MergeOptions o;
  o.method = MergeMethod::kTies;
  o.density = 1;
  ExpectNear(Merge({{1, -2, 0.5, 0}, {-3, 1, 0.5, 2}}, {0, 0, 0, 0}, o), {-3, -2, 0.5, 2});
}

TEST(Merge, TiesTrimsToTheLargestMagnitudes) {
  MergeOptions o;
  o.method = MergeMethod::kTies;
  o.density = 0.5;
  // δ1 keeps {4, -3}, δ2 keeps {-5, 2}: entry 0: 4 vs -5 → sum -1, elected -, mean -5;
  // entry 1: -3 → -3; entry 2: 2 → 2; entry 3: nothing kept → 0.
  ExpectNear(Merge({{4, -3, 1, 0.5}, {-5, 0.1f, 2, -0.2f}}, {0, 0, 0, 0}, o), {-5, -3, 2, 0});
}

TEST(Merge, DareKeepsAboutDensityAndRescales) {
  MergeOptions o;
  o.method = MergeMethod::kDare;
  o.density = 0.25;
  o.seed = 7;
  const int n = 40000;
  std::vector<float> base(n, 1.0f), model(n, 2.0f);
  const std::vector<float> out = Merge({model}, base, o);
  int kept = 0;
  for (float v : out) {
    if (v != 1.0f) {
      EXPECT_FLOAT_EQ(v, 5.0f);  // 1 + 1/0.25
      ++kept;
    }
  }
  EXPECT_NEAR(kept / double{n}, 0.25, 0.01);
  EXPECT_EQ(out, Merge({model}, base, o)) << "the mask is a function of the seed";
  o.seed = 8;
  EXPECT_NE(out, Merge({model}, base, o));
}

TEST(Merge, BadOptionsAreNamed) {
  std::vector<float> out(1);
  const float a = 1, b = 2;
  MergeOptions o;
  o.method = MergeMethod::kTies;
  EXPECT_NE(MergeTensors({&a, &b}, nullptr, o, 0, &out).message().find("base"), std::string::npos);
  o.method = MergeMethod::kSlerp;
  EXPECT_NE(MergeTensors({&a}, nullptr, o, 0, &out).message().find("slerp takes 2"), std::string::npos);
  o.method = MergeMethod::kDare;
  o.density = 0;
  EXPECT_NE(MergeTensors({&a}, &b, o, 0, &out).message().find("density"), std::string::npos);
}

loom::v1::ModelConfig Model(int d_model) {
  loom::v1::ModelConfig m;
  m.set_layers(1);
  m.set_d_model(d_model);
  m.set_heads(2);
  m.set_kv_heads(1);
  m.set_ffn_size(16);
  m.set_vocab_size(20);
  return m;
}

std::string Save(const std::string& dir, const loom::v1::ModelConfig& m, uint64_t seed) {
  Transformer model(*TransformerConfig::FromProto(m));
  model.InitWeights(seed);
  loom::v1::CheckpointManifest manifest;
  *manifest.mutable_model() = m;
  EXPECT_TRUE(SaveCheckpoint(dir, model, nullptr, manifest).ok());
  return dir;
}

TEST(MergeCheckpoints, AverageOfCheckpointsIsTheElementwiseMean) {
  const std::string root = ::testing::TempDir() + "/merge_ckpt";
  std::filesystem::remove_all(root);
  const auto m = Model(8);
  const std::vector<std::string> inputs = {Save(root + "/a", m, 1), Save(root + "/b", m, 2),
                                           Save(root + "/c", m, 3)};
  ASSERT_TRUE(MergeCheckpoints(inputs, "", MergeOptions{}, root + "/avg", "p-1", "avg", 0).ok());
  std::vector<std::unique_ptr<Transformer>> models;
  for (const std::string& dir : {inputs[0], inputs[1], inputs[2], root + "/avg"}) {
    models.push_back(std::make_unique<Transformer>(*TransformerConfig::FromProto(m)));
    ASSERT_TRUE(LoadWeights(dir, models.back().get()).ok());
  }
  for (int64_t j = 0; j < models[0]->num_params(); ++j) {
    const double mean =
        (double{models[0]->params()[j]} + models[1]->params()[j] + models[2]->params()[j]) / 3;
    ASSERT_NEAR(models[3]->params()[j], mean, 1e-7 * std::max(1.0, std::abs(mean))) << j;
  }
  ASSERT_TRUE(MergeCheckpoints({inputs[1]}, "", MergeOptions{}, root + "/one", "p-1", "avg", 0).ok());
  Transformer one(*TransformerConfig::FromProto(m));
  ASSERT_TRUE(LoadWeights(root + "/one", &one).ok());
  EXPECT_EQ(0, std::memcmp(one.params(), models[1]->params(), one.num_params() * sizeof(float)));
}

TEST(MergeCheckpoints, DifferentArchitecturesAreRefusedNamingTheCheckpoint) {
  const std::string root = ::testing::TempDir() + "/merge_arch";
  std::filesystem::remove_all(root);
  const std::string a = Save(root + "/a", Model(8), 1), b = Save(root + "/b", Model(12), 2);
  absl::Status s = MergeCheckpoints({a, b}, "", MergeOptions{}, root + "/out", "p-1", "m", 0);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(root + "/b"), std::string::npos) << s;
  EXPECT_NE(s.message().find("architecture"), std::string::npos) << s;
}

}  // namespace
}  // namespace loom::engine
