// Preference losses and token log-probabilities: DPO at policy = reference is exactly ln 2, every
// gradient matches finite differences, IPO / hinge / Bradley–Terry match hand-computed values,
// and the log-prob backward matches finite differences of the log-probs.
#include "kernels/cpu/preference.h"

#include <cmath>

#include <gtest/gtest.h>

#include "kernel_test_util.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/log_probs.h"

namespace loom::kernels::cpu {
namespace {

using loom::testing::ExpectGradientMatches;
using loom::testing::RandomFloats;
using loom::testing::ToDouble;
using Vec = std::vector<double>;

TEST(Dpo, SigmoidLossIsLn2WhenThePolicyIsTheReference) {
  const Vec pc = {-12.5, -3.0, -40.25}, pr = {-9.0, -7.5, -1.0};
  double dpc[3], dpr[3];
  const auto r = DpoLossAndGrad(pc.data(), pr.data(), pc.data(), pr.data(), 3, DpoOptions{}, 1.0, dpc, dpr);
  EXPECT_NEAR(r.loss_sum / 3, std::log(2.0), 1e-12);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(dpc[i], -0.1 * 0.5, 1e-12);  // −β σ(0)
    EXPECT_NEAR(dpr[i], 0.1 * 0.5, 1e-12);
  }
}

// Loss of one pair as a function of (policy_chosen, policy_rejected), for finite differences.
double PairLoss(const DpoOptions& o, double pc, double pr, double rc, double rr) {
  return DpoLossAndGrad(&pc, &pr, &rc, &rr, 1, o, 1.0, nullptr, nullptr).loss_sum;
}

TEST(Dpo, GradientsMatchFiniteDifferencesForEveryLoss) {
  for (DpoLoss loss : {DpoLoss::kSigmoid, DpoLoss::kIpo, DpoLoss::kHinge}) {
    DpoOptions o;
    o.loss = loss;
    o.beta = 0.3;
    o.label_smoothing = loss == DpoLoss::kSigmoid ? 0.1 : 0.0;
    const double pc = -10.0, pr = -11.5, rc = -10.8, rr = -11.0;  // Δ = 0.8 − (−0.5) = 1.3
    double dpc, dpr;
    DpoLossAndGrad(&pc, &pr, &rc, &rr, 1, o, 1.0, &dpc, &dpr);
    const double h = 1e-6;
    EXPECT_NEAR(dpc, (PairLoss(o, pc + h, pr, rc, rr) - PairLoss(o, pc - h, pr, rc, rr)) / (2 * h), 1e-6);
    EXPECT_NEAR(dpr, (PairLoss(o, pc, pr + h, rc, rr) - PairLoss(o, pc, pr - h, rc, rr)) / (2 * h), 1e-6);
  }
}

TEST(Dpo, IpoAndHingeMatchHandComputedValues) {
  const double pc = -10.0, pr = -11.5, rc = -10.8, rr = -11.0;  // Δ = 1.3
  DpoOptions ipo{DpoLoss::kIpo, 0.5, 0.0};
  EXPECT_NEAR(PairLoss(ipo, pc, pr, rc, rr), (1.3 - 1.0) * (1.3 - 1.0), 1e-12);  // (Δ − 1/(2β))²
  DpoOptions hinge{DpoLoss::kHinge, 0.5, 0.0};
  EXPECT_NEAR(PairLoss(hinge, pc, pr, rc, rr), 1 - 0.65, 1e-12);  // relu(1 − βΔ)
  hinge.beta = 1.0;
  EXPECT_EQ(PairLoss(hinge, pc, pr, rc, rr), 0.0);
  DpoOptions sigmoid{DpoLoss::kSigmoid, 0.5, 0.0};
  EXPECT_NEAR(PairLoss(sigmoid, pc, pr, rc, rr), std::log1p(std::exp(-0.65)), 1e-12);
}

TEST(BradleyTerry, LossGradientAndAccuracy) {
  const Vec rw = {2.0, -1.0}, rl = {0.5, 1.0};
  double dw[2], dl[2];
  const auto r = BradleyTerryLossAndGrad(rw.data(), rl.data(), 2, 0.25, 0.5, dw, dl);
  EXPECT_NEAR(r.loss_sum, std::log1p(std::exp(-1.25)) + std::log1p(std::exp(2.25)), 1e-12);
  EXPECT_EQ(r.accuracy_sum, 1.0);
  EXPECT_NEAR(dw[0], -0.5 / (1 + std::exp(1.25)), 1e-12);  // −σ(−x) · scale
  EXPECT_NEAR(dl[0], 0.5 / (1 + std::exp(1.25)), 1e-12);
}

TEST(TokenLogProbs, ValuesAndBackwardMatchTheDefinition) {
  const int64_t rows = 6, vocab = 31;
  const auto logits = RandomFloats(rows * vocab, 81, 3.0f);
  const std::vector<int32_t> targets = {4, kIgnoreTarget, 30, 0, 7, 7};
  std::vector<float> lp(rows);
  TokenLogProbs(logits.data(), targets.data(), rows, vocab, lp.data());
  auto reference = [&](const Vec& l) {
    Vec out(rows, 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] == kIgnoreTarget) continue;
      double max = -1e300, sum = 0;
      for (int64_t v = 0; v < vocab; ++v) max = std::max(max, l[r * vocab + v]);
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(l[r * vocab + v] - max);
      out[r] = l[r * vocab + targets[r]] - max - std::log(sum);
    }
    return out;
  };
  const Vec want = reference(ToDouble(logits));
  for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(lp[r], want[r], 1e-5) << r;
  const std::vector<float> grad = {0.5f, 2.0f, -1.0f, 0.25f, 1.5f, -0.75f};
  std::vector<float> d(rows * vocab);
  TokenLogProbsBackward(logits.data(), targets.data(), grad.data(), rows, vocab, d.data());
  ExpectGradientMatches(reference, ToDouble(logits), Vec(grad.begin(), grad.end()), d, "dlogits", 120);
}

}  // namespace
}  // namespace loom::kernels::cpu
