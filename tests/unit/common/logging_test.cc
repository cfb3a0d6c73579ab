#include "common/logging.h"

#include <regex>

#include <gtest/gtest.h>

namespace loom {
namespace {

TEST(Logging, OneLinePerEventWithTimestampLevelAndComponent) {
  SetLogLevel(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  Log(LogLevel::kInfo, "coordinator", "plan ", "llama3_tiny-1", " submitted\n(6 stages)");
  Log(LogLevel::kDebug, "coordinator", "hidden at INFO");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(std::regex_match(
      out,
      std::regex(
          R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  coordinator: plan llama3_tiny-1 submitted \(6 stages\)\n)")))
      << out;
}

TEST(Logging, ParsesLevels) {
  LogLevel level;
  EXPECT_TRUE(ParseLogLevel("WARN", &level));
  EXPECT_EQ(level, LogLevel::kWarning);
  EXPECT_TRUE(ParseLogLevel("debug", &level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_FALSE(ParseLogLevel("loud", &level));
}

}  // namespace
}  // namespace loom
