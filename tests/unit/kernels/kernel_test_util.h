// Helpers for the kernel tests: random inputs, float<->double, comparisons and central finite
// differences of a reference forward function.
#pragma once

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "reference_kernels.h"

namespace loom::testing {

using reference::Vec;

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> out(n);
  for (float& x : out) x = dist(rng);
  return out;
}

inline Vec ToDouble(const std::vector<float>& x) { return Vec(x.begin(), x.end()); }

// Max over i of |a[i] − b[i]| / (atol + rtol·|b[i]|); <= 1 means within tolerance.
inline double WorstError(const std::vector<float>& a, const Vec& b, double atol, double rtol, size_t* where) {
  double worst = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double e = std::abs(a[i] - b[i]) / (atol + rtol * std::abs(b[i]));
    if (e > worst || std::isnan(e)) {
      worst = std::isnan(e) ? INFINITY : e;
      *where = i;
    }
  }
  return worst;
}

#define EXPECT_CLOSE(actual, expected, atol, rtol)                                                    \
  do {                                                                                                \
    size_t where_ = 0;                                                                                \
    const double worst_ = ::loom::testing::WorstError((actual), (expected), (atol), (rtol), &where_); \
    EXPECT_LE(worst_, 1.0) << #actual " differs at " << where_ << ": " << (actual)[where_] << " vs "  \
                           << (expected)[where_];                                                     \
  } while (0)

// Checks `analytic` (the kernel's gradient of L = Σ proj ⊙ f(x) with respect to x) against
// central differences of the double-precision reference f at `samples` coordinates.
inline void ExpectGradientMatches(const std::function<Vec(const Vec&)>& f, const Vec& x, const Vec& proj,
                                  const std::vector<float>& analytic, const std::string& what,
                                  int samples = 64, double h = 1e-5) {
  ASSERT_EQ(analytic.size(), x.size()) << what;
  std::mt19937 rng(1234);
  const int n = static_cast<int>(x.size());
  for (int s = 0; s < std::min(samples, n); ++s) {
    const int i = samples >= n ? s : static_cast<int>(rng() % n);
    Vec plus = x, minus = x;
    plus[i] += h;
    minus[i] -= h;
    const Vec fp = f(plus), fm = f(minus);
    double lp = 0, lm = 0;
    for (size_t j = 0; j < fp.size(); ++j) {
      lp += proj[j] * fp[j];
      lm += proj[j] * fm[j];
    }
    const double fd = (lp - lm) / (2 * h);
    EXPECT_NEAR(analytic[i], fd, 2e-4 + 2e-3 * std::abs(fd)) << what << " gradient at " << i;
  }
}

}  // namespace loom::testing
