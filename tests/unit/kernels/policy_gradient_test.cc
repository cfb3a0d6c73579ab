// RLOO advantages (kernels/cpu/policy_gradient.h): zero when a group's rewards are equal, and the
// leave-one-out formula on hand-computed groups.
#include "kernels/cpu/policy_gradient.h"

#include <vector>

#include <gtest/gtest.h>

namespace loom::kernels::cpu {
namespace {

TEST(Rloo, EqualRewardsGiveZeroAdvantages) {
  const std::vector<double> rewards = {1, 1, 1, 1, 0.25, 0.25, 0.25, 0.25};
  std::vector<double> a(rewards.size(), 99);
  RlooAdvantages(rewards.data(), 2, 4, a.data());
  for (double v : a) EXPECT_EQ(v, 0.0);
}

TEST(Rloo, HandComputedGroups) {
  // Group 1: r = [1, 0, 0, 1]: A_0 = 1 − (0+0+1)/3 = 2/3, A_1 = 0 − (1+0+1)/3 = −2/3.
  // Group 2 (K = 4): r = [3, 1, 2, 6]: A_3 = 6 − (3+1+2)/3 = 4, A_1 = 1 − (3+2+6)/3 = −8/3.
  std::vector<double> r = {1, 0, 0, 1, 3, 1, 2, 6};
  std::vector<double> a(r.size());
  RlooAdvantages(r.data(), 2, 4, a.data());
  const std::vector<double> want = {2.0 / 3, -2.0 / 3, -2.0 / 3, 2.0 / 3, 3 - 3.0, 1 - 11.0 / 3, 2 - 10.0 / 3, 4};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(a[i], want[i], 1e-12) << i;
  // A_i = K/(K−1)·(r_i − mean): the advantages of a group sum to 0.
  EXPECT_NEAR(a[4] + a[5] + a[6] + a[7], 0.0, 1e-12);
  // In place.
  RlooAdvantages(r.data(), 2, 4, r.data());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(r[i], want[i], 1e-12) << i;
}

TEST(Rloo, TwoSamples) {
  const double r[2] = {0.5, 2.0};
  double a[2];
  RlooAdvantages(r, 1, 2, a);
  EXPECT_DOUBLE_EQ(a[0], -1.5);
  EXPECT_DOUBLE_EQ(a[1], 1.5);
}

}  // namespace
}  // namespace loom::kernels::cpu
