// Distillation losses: against a plain double-precision definition, finite-difference gradients
// for every mode, and the student = teacher identity (soft-CE equals the teacher's entropy and
// its gradient vanishes).
#include "kernels/cpu/distill.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/cpu/cross_entropy.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::ExpectGradientMatches;
using loom::testing::RandomFloats;
using loom::testing::ToDouble;
using Vec = std::vector<double>;

// log softmax(x / t), written out.
Vec LogSoftmax(const double* x, int n, double t) {
  double max = -1e300;
  for (int v = 0; v < n; ++v) max = std::max(max, x[v] / t);
  double sum = 0;
  for (int v = 0; v < n; ++v) sum += std::exp(x[v] / t - max);
  Vec out(n);
  for (int v = 0; v < n; ++v) out[v] = x[v] / t - max - std::log(sum);
  return out;
}

// The definition of each loss, summed over rows with a label.
double ReferenceLoss(const Vec& s, const Vec& te, const std::vector<int32_t>& labels, int vocab,
                     const DistillOptions& o) {
  double total = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] == kIgnoreTarget) continue;
    const double* sr = s.data() + r * vocab;
    const double* tr = te.data() + r * vocab;
    const Vec ls1 = LogSoftmax(sr, vocab, 1.0);
    const double lm = -ls1[labels[r]];
    double kd = 0;
    if (o.mode == DistillOptions::Mode::kSoftCrossEntropy) {
      const Vec ls = LogSoftmax(sr, vocab, o.temperature), lt = LogSoftmax(tr, vocab, o.temperature);
      if (o.top_k == 0) {
        for (int v = 0; v < vocab; ++v) kd -= std::exp(lt[v]) * ls[v];
      } else {
        std::vector<int> idx(vocab);
        std::iota(idx.begin(), idx.end(), 0);
        std::sort(idx.begin(), idx.end(), [&](int a, int b) { return tr[a] > tr[b]; });
        double top_t = 0, top_s = 0;
        for (int i = 0; i < o.top_k; ++i) {
          kd -= std::exp(lt[idx[i]]) * ls[idx[i]];
          top_t += std::exp(lt[idx[i]]);
          top_s += std::exp(ls[idx[i]]);
        }
        kd -= (1 - top_t) * std::log(1 - top_s);
      }
    } else {
      const int top1 = static_cast<int>(std::max_element(tr, tr + vocab) - tr);
      kd = -o.teacher_weight * ls1[top1] - (1 - o.teacher_weight) * ls1[labels[r]];
    }
    total += (1 - o.lm_weight) * kd + o.lm_weight * lm;
  }
  return total;
}

void CheckMode(const DistillOptions& o, const std::string& what) {
  const int rows = 5, vocab = 23;
  const auto student = RandomFloats(rows * vocab, 11, 2.0f), teacher = RandomFloats(rows * vocab, 12, 3.0f);
  const std::vector<int32_t> labels = {4, kIgnoreTarget, 0, 22, 9};
  std::vector<float> grad(rows * vocab);
  const float scale = 0.25f;
  const DistillResult r =
      DistillCrossEntropy(student.data(), teacher.data(), labels.data(), rows, vocab, o, scale, grad.data());
  EXPECT_EQ(r.counted, 4) << what;
  const Vec t = ToDouble(teacher);
  EXPECT_NEAR(r.loss_sum, ReferenceLoss(ToDouble(student), t, labels, vocab, o), 1e-5) << what;
  ExpectGradientMatches([&](const Vec& s) { return Vec{scale * ReferenceLoss(s, t, labels, vocab, o)}; },
                        ToDouble(student), Vec{1.0}, grad, what, 115);
}

TEST(Distill, SoftCrossEntropyFullDistribution) {
  DistillOptions o;
  CheckMode(o, "soft_ce");
  o.temperature = 2.0f;
  o.lm_weight = 0.3f;
  CheckMode(o, "soft_ce T=2 with lm");
}

TEST(Distill, SoftCrossEntropyTopKWithTailBucket) {
  DistillOptions o;
  o.top_k = 5;
  CheckMode(o, "soft_ce top-5");
  o.temperature = 1.5f;
  CheckMode(o, "soft_ce top-5 T=1.5");
}

TEST(Distill, Top1TargetOfAfm) {
  DistillOptions o;
  o.mode = DistillOptions::Mode::kTop1Target;
  CheckMode(o, "top1 w=0.9");
  o.teacher_weight = 0.6f;
  o.lm_weight = 0.5f;
  CheckMode(o, "top1 w=0.6 with lm");
}

TEST(Distill, StudentEqualToTeacherGivesTheTeacherEntropyAndNoGradient) {
  const int rows = 3, vocab = 50;
  const auto logits = RandomFloats(rows * vocab, 13, 3.0f);
  const std::vector<int32_t> labels = {1, 2, 3};
  std::vector<float> grad(rows * vocab);
  const DistillResult r = DistillCrossEntropy(logits.data(), logits.data(), labels.data(), rows, vocab,
                                              DistillOptions{}, 1.0f, grad.data());
  double entropy = 0;
  const Vec x = ToDouble(logits);
  for (int row = 0; row < rows; ++row) {
    const Vec lp = LogSoftmax(x.data() + row * vocab, vocab, 1.0);
    for (double l : lp) entropy -= std::exp(l) * l;
  }
  EXPECT_NEAR(r.distill_sum, entropy, 1e-6);
  for (float g : grad) EXPECT_NEAR(g, 0.0f, 1e-7);
}

TEST(Distill, LmWeightOneIsThePlainCrossEntropy) {
  const int rows = 4, vocab = 31;
  const auto s = RandomFloats(rows * vocab, 14, 2.0f), t = RandomFloats(rows * vocab, 15, 2.0f);
  const std::vector<int32_t> labels = {0, 30, kIgnoreTarget, 7};
  DistillOptions o;
  o.lm_weight = 1.0f;
  std::vector<float> g1(rows * vocab), g2(rows * vocab);
  const auto a = DistillCrossEntropy(s.data(), t.data(), labels.data(), rows, vocab, o, 0.5f, g1.data());
  const auto b = CrossEntropy(s.data(), labels.data(), rows, vocab, 0.5f, g2.data());
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5);
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_NEAR(g1[i], g2[i], 1e-6) << i;
}

TEST(Distill, Top1TargetIsPlainCrossEntropyWhenTheTeacherAgreesWithTheLabel) {
  const int rows = 4, vocab = 29;
  const auto s = RandomFloats(rows * vocab, 16, 2.0f);
  auto t = RandomFloats(rows * vocab, 17, 1.0f);
  const std::vector<int32_t> labels = {3, 28, 0, 11};
  for (int r = 0; r < rows; ++r) t[r * vocab + labels[r]] = 10.0f;  // the teacher's top-1 is the label
  DistillOptions o;
  o.mode = DistillOptions::Mode::kTop1Target;
  std::vector<float> g1(rows * vocab), g2(rows * vocab);
  const auto a = DistillCrossEntropy(s.data(), t.data(), labels.data(), rows, vocab, o, 1.0f, g1.data());
  const auto b = CrossEntropy(s.data(), labels.data(), rows, vocab, 1.0f, g2.data());
  EXPECT_NEAR(a.loss_sum, b.loss_sum, 1e-5);
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_NEAR(g1[i], g2[i], 1e-6) << i;
}

}  // namespace
}  // namespace loom::kernels::cpu
