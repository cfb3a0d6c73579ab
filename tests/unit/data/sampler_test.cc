#include "data/sampler.h"

#include <set>
#include <string>
#include <vector>

#include "data/shard.h"
#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

const std::string kHash(64, 'c');
constexpr int kVocab = 4000;

// Source s holds ids in [1000 s, 1000 s + 1000), so a sequence's first token tells its source.
void WriteSource(const TempDir& dir, const std::string& name, int s, int docs, int max_len, uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<std::vector<int32_t>> out;
  for (int d = 0; d < docs; ++d) {
    std::vector<int32_t> doc(1 + rng.Below(max_len));
    for (int32_t& t : doc) t = 1000 * s + static_cast<int32_t>(rng.Below(1000));
    out.push_back(std::move(doc));
  }
  ASSERT_TRUE(WriteShardDir(dir / (name + "/train"), out, kHash, kVocab, 5000).ok());
}

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteSource(dir_, "web", 0, 400, 300, 1);
    WriteSource(dir_, "code", 1, 200, 200, 2);
    WriteSource(dir_, "math", 2, 50, 100, 3);  // small: cycles many epochs
  }
  SamplerOptions Options(std::vector<MixPoint> mix, uint64_t seed = 17) const {
    SamplerOptions o;
    o.sources = PreparedSources(dir_.path(), {"web", "code", "math"});
    o.mix = std::move(mix);
    o.seed = seed;
    o.expected_tokenizer_hash = kHash;
    o.expected_vocab_size = kVocab;
    return o;
  }
  std::unique_ptr<BlendedSampler> Open(std::vector<MixPoint> mix, uint64_t seed = 17) const {
    auto s = BlendedSampler::Open(Options(std::move(mix), seed));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }
  TempDir dir_;
};

TEST_F(SamplerTest, RealisedSharesMatchWeightsAndChangeExactlyAtTheBoundary) {
  constexpr int kSeqLen = 16, kGlobal = 64;
  // The boundary falls inside a global batch (row 8 of batch 781).
  constexpr int64_t kBoundary = (781LL * kGlobal + 8) * kSeqLen;
  const std::vector<double> before = {0.5, 0.3, 0.2}, after = {0.1, 0.1, 0.8};
  auto sampler = Open({{0, {{"web", 5}, {"code", 3}, {"math", 2}}},  // unnormalised on purpose
                       {kBoundary, {{"web", 0.1}, {"code", 0.1}, {"math", 0.8}}}});
  ASSERT_NE(sampler, nullptr);
  std::vector<int64_t> count_before(3), count_after(3), first_after(3);
  int64_t n_before = 0, n_after = 0;
  TokenBatch batch;
  const int kBatches = 150000 / kGlobal + 1;  // ~5x10^4 sequences before the boundary, 10^5 after
  for (int b = 0; b < kBatches; ++b) {
    ASSERT_TRUE(sampler->NextBatch(kSeqLen, kGlobal, 0, 1, &batch).ok());
    for (int r = 0; r < kGlobal; ++r) {
      const int64_t start = (int64_t{b} * kGlobal + r) * kSeqLen;
      const int s = batch.inputs[r * kSeqLen] / 1000;
      if (start < kBoundary) {
        ++count_before[s], ++n_before;
      } else {
        ++count_after[s], ++n_after;
        if (n_after <= 1000) ++first_after[s];
      }
    }
  }
  ASSERT_GE(n_before, 49000);
  ASSERT_GE(n_after, 100000);
  for (int s = 0; s < 3; ++s) {
    EXPECT_NEAR(double(count_before[s]) / n_before, before[s], 0.01)
        << "source " << s << " before the boundary";
    EXPECT_NEAR(double(count_after[s]) / n_after, after[s], 0.01) << "source " << s << " after the boundary";
    // The new mix holds from the boundary on, not on average over a later stretch.
    EXPECT_NEAR(double(first_after[s]) / 1000, after[s], 0.01)
        << "source " << s << " in the first 1000 after";
  }
  // The sampler's own accounting agrees with what was read.
  const auto drawn = sampler->SourceTokens();
  EXPECT_EQ(drawn.at("web"), (count_before[0] + count_after[0]) * kSeqLen);
  EXPECT_EQ(drawn.at("math"), (count_before[2] + count_after[2]) * kSeqLen);
  EXPECT_NEAR(sampler->CurrentWeights().at("math"), 0.8, 1e-12);
  EXPECT_GT(sampler->SourceEpochs().at("math"), 10);
}

TEST_F(SamplerTest, ZeroWeightSourceStartsExactlyAtItsBoundary) {
  constexpr int kSeqLen = 8, kGlobal = 12;
  constexpr int64_t kBoundary = 1000;  // not a multiple of the batch: mid-batch
  auto sampler = Open({{0, {{"web", 1}, {"code", 1}}}, {kBoundary, {{"math", 1}}}});
  ASSERT_NE(sampler, nullptr);
  TokenBatch batch;
  for (int b = 0; b < 30; ++b) {
    ASSERT_TRUE(sampler->NextBatch(kSeqLen, kGlobal, 0, 1, &batch).ok());
    for (int r = 0; r < kGlobal; ++r) {
      const int64_t start = (int64_t{b} * kGlobal + r) * kSeqLen;
      const bool is_math = batch.inputs[r * kSeqLen] / 1000 == 2;
      EXPECT_EQ(is_math, start >= kBoundary) << "sequence starting at token " << start;
    }
  }
}

// Runs `batches` global batches with a seq_len that changes along the way.
std::vector<TokenBatch> RunBatches(BlendedSampler& s, int first, int count, int dp_rank = 0,
                                   int dp_size = 1) {
  std::vector<TokenBatch> out;
  for (int b = first; b < first + count; ++b) {
    TokenBatch batch;
    const int seq_len = b < 40 ? 32 : 64;
    EXPECT_TRUE(s.NextBatch(seq_len, 8, dp_rank, dp_size, &batch).ok());
    out.push_back(std::move(batch));
  }
  return out;
}

TEST_F(SamplerTest, ResumeFromSavedStateGivesTheSameSequences) {
  const std::vector<MixPoint> mix = {{0, {{"web", 0.6}, {"code", 0.3}, {"math", 0.1}}},
                                     {5000, {{"web", 0.2}, {"code", 0.2}, {"math", 0.6}}}};
  auto reference = Open(mix);
  const std::vector<TokenBatch> all = RunBatches(*reference, 0, 120);

  constexpr int k = 37;
  auto first = Open(mix);
  RunBatches(*first, 0, k);
  const std::string state = first->SaveState();
  EXPECT_LT(state.size(), 512u) << state;

  auto resumed = Open(mix);
  ASSERT_TRUE(resumed->RestoreState(state).ok());
  EXPECT_EQ(resumed->SaveState(), state);
  const std::vector<TokenBatch> rest = RunBatches(*resumed, k, 120 - k);
  for (int b = k; b < 120; ++b) {
    EXPECT_EQ(rest[b - k].inputs, all[b].inputs) << "batch " << b;
    EXPECT_EQ(rest[b - k].targets, all[b].targets) << "batch " << b;
  }
  EXPECT_EQ(resumed->SourceTokens(), reference->SourceTokens());
  EXPECT_EQ(resumed->SourceEpochs(), reference->SourceEpochs());
}

TEST_F(SamplerTest, DataParallelSlicesConcatenateToTheGlobalBatch) {
  const std::vector<MixPoint> mix = {{0, {{"web", 0.5}, {"code", 0.25}, {"math", 0.25}}}};
  auto single = Open(mix);
  const std::vector<TokenBatch> global = RunBatches(*single, 0, 60);
  std::vector<std::vector<TokenBatch>> ranks;
  for (int r = 0; r < 4; ++r) {
    auto s = Open(mix);
    ranks.push_back(RunBatches(*s, 0, 60, r, 4));
  }
  for (size_t b = 0; b < global.size(); ++b) {
    std::vector<int32_t> inputs, targets;
    for (int r = 0; r < 4; ++r) {
      EXPECT_EQ(ranks[r][b].batch_size, 2);
      inputs.insert(inputs.end(), ranks[r][b].inputs.begin(), ranks[r][b].inputs.end());
      targets.insert(targets.end(), ranks[r][b].targets.begin(), ranks[r][b].targets.end());
    }
    EXPECT_EQ(inputs, global[b].inputs) << "batch " << b;
    EXPECT_EQ(targets, global[b].targets) << "batch " << b;
  }
}

TEST_F(SamplerTest, TargetsAreInputsShiftedByOne) {
  auto sampler = Open({{0, {{"web", 1}}}});
  TokenBatch a, b;
  ASSERT_TRUE(sampler->NextBatch(16, 2, 0, 1, &a).ok());
  ASSERT_TRUE(sampler->NextBatch(16, 2, 0, 1, &b).ok());
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t + 1 < 16; ++t) EXPECT_EQ(a.targets[r * 16 + t], a.inputs[r * 16 + t + 1]);
  }
  // Consecutive sequences of one source continue the stream.
  EXPECT_EQ(a.targets[15], a.inputs[16]);
  EXPECT_EQ(a.targets[31], b.inputs[0]);
}

TEST(SamplerEpochs, EachEpochIsAReshuffledPassOverEveryDocument) {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 20; ++d) docs.push_back(std::vector<int32_t>(5, d));
  ASSERT_TRUE(WriteShardDir(dir / "tiny/train", docs, kHash, kVocab).ok());
  SamplerOptions o;
  o.sources = PreparedSources(dir.path(), {"tiny"});
  o.mix = {{0, {{"tiny", 1}}}};
  o.seed = 5;
  auto sampler = BlendedSampler::Open(o);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  std::vector<std::vector<int32_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    TokenBatch batch;  // one batch = 100 tokens = exactly one epoch
    ASSERT_TRUE((*sampler)->NextBatch(10, 10, 0, 1, &batch).ok());
    EXPECT_EQ((*sampler)->SourceEpochs().at("tiny"), e + 1);
    std::vector<int32_t> order;
    for (int i = 0; i < 100; i += 5) order.push_back(batch.inputs[i]);
    std::multiset<int32_t> seen(batch.inputs.begin(), batch.inputs.end());
    for (int d = 0; d < 20; ++d) EXPECT_EQ(seen.count(d), 5u) << "document " << d << " in epoch " << e;
    epochs.push_back(order);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST_F(SamplerTest, RefusesForeignStateAndBadOptions) {
  auto a = Open({{0, {{"web", 1}}}}, 1);
  auto b = Open({{0, {{"web", 1}}}}, 2);
  TokenBatch batch;
  ASSERT_TRUE(a->NextBatch(8, 4, 0, 1, &batch).ok());
  EXPECT_THAT(std::string(b->RestoreState(a->SaveState()).message()), HasSubstr("seed"));
  EXPECT_FALSE(b->RestoreState("garbage").ok());
  EXPECT_FALSE(a->NextBatch(8, 6, 0, 4, &batch).ok());  // 6 sequences do not split 4 ways

  auto unknown = BlendedSampler::Open(Options({{0, {{"webb", 1}}}}));
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("'webb'"));
  SamplerOptions small_model = Options({{0, {{"web", 1}}}});
  small_model.max_vocab_size = kVocab - 1;
  auto too_big = BlendedSampler::Open(small_model);
  ASSERT_FALSE(too_big.ok());
  EXPECT_THAT(std::string(too_big.status().message()), HasSubstr("embedding rows"));
  SamplerOptions wrong = Options({{0, {{"web", 1}}}});
  wrong.expected_tokenizer_hash = std::string(64, 'd');
  auto refused = BlendedSampler::Open(wrong);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("shard-00000.bin"));
}

}  // namespace
}  // namespace loom::data
