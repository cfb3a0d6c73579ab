#include "common/units.h"

#include <random>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(ParseCount, AcceptsPlainDecimalAndBinaryUnits) {
  EXPECT_EQ(*ParseCount("4096"), 4096);
  EXPECT_EQ(*ParseCount("2M"), 2'000'000);
  EXPECT_EQ(*ParseCount("1.5B"), 1'500'000'000);
  EXPECT_EQ(*ParseCount("15.6T"), 15'600'000'000'000);
  EXPECT_EQ(*ParseCount("252M"), 252'000'000);
  EXPECT_EQ(*ParseCount("64Ki"), 65'536);
  EXPECT_EQ(*ParseCount("4Mi"), 4'194'304);
  EXPECT_EQ(*ParseCount("8k"), 8'000);
  EXPECT_EQ(*ParseCount("1G"), 1'000'000'000);
  EXPECT_EQ(*ParseCount("1_000_000"), 1'000'000);
  EXPECT_EQ(*ParseCount("1e6"), 1'000'000);
  EXPECT_EQ(*ParseCount("2.5E3"), 2'500);
  EXPECT_EQ(*ParseCount("-3"), -3);
  EXPECT_EQ(*ParseCount("0"), 0);
}

TEST(ParseCount, RejectsWhatIsNotAnExactCount) {
  for (const char* bad : {"", "M", "2X", "1.0005K", "1.5", "1e-3", "abc", "2MM", "1e6K", "--2",
                          "99999999999999999999", "9.3e18", "1.2.3", "_1", "0x10"}) {
    EXPECT_FALSE(ParseCount(bad).ok()) << "'" << bad << "' was accepted";
  }
  // The message says what a count looks like.
  EXPECT_NE(ParseCount("2X").status().message().find("2M or 64Ki"), std::string::npos);
}

TEST(ParseReal, AcceptsFiniteNumbersOnly) {
  EXPECT_DOUBLE_EQ(*ParseReal("3e-4"), 3e-4);
  EXPECT_DOUBLE_EQ(*ParseReal("0.1"), 0.1);
  EXPECT_DOUBLE_EQ(*ParseReal("-2"), -2.0);
  for (const char* bad : {"", "nan", "inf", "-inf", "1e999", "0.1x", "fast"}) {
    EXPECT_FALSE(ParseReal(bad).ok()) << "'" << bad << "' was accepted";
  }
}

TEST(FormatCount, IsCompactAndExact) {
  EXPECT_EQ(FormatCount(2'000'000), "2M");
  EXPECT_EQ(FormatCount(65'536), "64Ki");
  EXPECT_EQ(FormatCount(1'500'000), "1.5M");
  EXPECT_EQ(FormatCount(2'250'000), "2.25M");
  EXPECT_EQ(FormatCount(12'345), "12345");
  EXPECT_EQ(FormatCount(61'440), "60Ki");
  EXPECT_EQ(FormatCount(8'192), "8Ki");
  EXPECT_EQ(FormatCount(1'500), "1.5K");
  EXPECT_EQ(FormatCount(999), "999");
  EXPECT_EQ(FormatCount(0), "0");
  EXPECT_EQ(FormatCount(-2'000'000), "-2M");
}

TEST(FormatCount, RoundTripsThroughParseCount) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    const int64_t n = static_cast<int64_t>(rng() >> (rng() % 63));
    auto parsed = ParseCount(FormatCount(n));
    ASSERT_TRUE(parsed.ok()) << FormatCount(n);
    ASSERT_EQ(*parsed, n) << FormatCount(n);
  }
  EXPECT_EQ(*ParseCount(FormatCount(INT64_MAX)), INT64_MAX);
  EXPECT_EQ(*ParseCount(FormatCount(INT64_MIN + 1)), INT64_MIN + 1);
}

}  // namespace
}  // namespace loom
