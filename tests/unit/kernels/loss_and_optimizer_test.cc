// Cross-entropy (with ignored targets), AdamW and Lion against their definitions.
#include <cstring>

#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/optimizer.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::ExpectGradientMatches;
using loom::testing::RandomFloats;
using loom::testing::ToDouble;
using reference::Vec;

TEST(CrossEntropy, LossAndGradientWithIgnoredRows) {
  const int64_t rows = 9, vocab = 37;
  const auto logits = RandomFloats(rows * vocab, 41, 4.0f);
  const std::vector<int32_t> targets = {3, kIgnoreTarget, 0, 36, 5, kIgnoreTarget, 12, 12, 1};
  std::vector<float> grad(rows * vocab);
  const float scale = 1.0f / 7;
  const CrossEntropyResult r = CrossEntropy(logits.data(), targets.data(), rows, vocab, scale, grad.data());
  EXPECT_EQ(r.counted, 7);
  EXPECT_NEAR(r.loss_sum, reference::CrossEntropySum(ToDouble(logits), targets, vocab), 1e-4);
  // d(scale·Σloss)/dlogits.
  ExpectGradientMatches(
      [&](const Vec& l) { return Vec{scale * reference::CrossEntropySum(l, targets, vocab)}; },
      ToDouble(logits), Vec{1.0}, grad, "dlogits", 120);
  for (int64_t v = 0; v < vocab; ++v) EXPECT_EQ(grad[1 * vocab + v], 0.0f);  // ignored row
}

TEST(CrossEntropy, GradientInPlaceEqualsOutOfPlaceAndForwardOnlyAgrees) {
  const int64_t rows = 33, vocab = 1000;
  auto logits = RandomFloats(rows * vocab, 42, 3.0f);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 97) % vocab);
  std::vector<float> out_of_place(rows * vocab);
  const auto a = CrossEntropy(logits.data(), targets.data(), rows, vocab, 0.5f, out_of_place.data());
  const auto b = CrossEntropy(logits.data(), targets.data(), rows, vocab, 0.5f, nullptr);
  const auto c = CrossEntropy(logits.data(), targets.data(), rows, vocab, 0.5f, logits.data());
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(a.loss_sum, c.loss_sum);
  EXPECT_EQ(0, std::memcmp(out_of_place.data(), logits.data(), logits.size() * sizeof(float)));
}

TEST(CrossEntropy, ExtremeLogitsStayFinite) {
  const std::vector<float> logits = {1000.0f, -1000.0f, 0.0f, -80.0f, 80.0f, 0.0f};
  const std::vector<int32_t> targets = {1, 0};
  std::vector<float> grad(6);
  const auto r = CrossEntropy(logits.data(), targets.data(), 2, 3, 1.0f, grad.data());
  EXPECT_NEAR(r.loss_sum, 2000.0 + 160.0, 1e-2);  // 1000-(-1000), 80-(-80)
  for (float g : grad) EXPECT_TRUE(std::isfinite(g));
}

TEST(AdamW, ThreeStepsMatchTheDefinition) {
  const int64_t n = 70000;  // several parallel chunks
  auto p = RandomFloats(n, 51), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
  Vec pr = ToDouble(p), mr(n, 0.0), vr(n, 0.0);
  for (int step = 1; step <= 3; ++step) {
    const auto g = RandomFloats(n, 60 + step);
    AdamWStep(p.data(), g.data(), m.data(), v.data(), n, AdamWHyper{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step},
              0.5f);
    Vec gd = ToDouble(g);
    for (double& x : gd) x *= 0.5;
    reference::AdamW(pr, gd, mr, vr, 1e-2, 0.9, 0.95, 1e-8, 0.1, step);
  }
  EXPECT_CLOSE(p, pr, 1e-6, 1e-5);
}

TEST(Lion, ThreeStepsMatchTheDefinition) {
  const int64_t n = 1000;
  auto p = RandomFloats(n, 52), m = std::vector<float>(n, 0.0f);
  Vec pr = ToDouble(p), mr(n, 0.0);
  for (int step = 1; step <= 3; ++step) {
    const auto g = RandomFloats(n, 70 + step);
    LionStep(p.data(), g.data(), m.data(), n, LionHyper{1e-3f, 0.9f, 0.99f, 0.1f}, 1.0f);
    reference::Lion(pr, ToDouble(g), mr, 1e-3, 0.9, 0.99, 0.1);
  }
  EXPECT_CLOSE(p, pr, 1e-6, 1e-5);
}

TEST(SumSquares, IsExactEnoughAndDeterministic) {
  const auto x = RandomFloats(100003, 53);
  double ref = 0;
  for (float v : x) ref += static_cast<double>(v) * v;
  EXPECT_NEAR(SumSquares(x.data(), x.size()), ref, 1e-9 * ref);
  EXPECT_EQ(SumSquares(x.data(), x.size()), SumSquares(x.data(), x.size()));
}

}  // namespace
}  // namespace loom::kernels::cpu
