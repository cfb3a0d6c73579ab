#include "common/command_line.h"

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include <gtest/gtest.h>

namespace loom {
namespace {

struct Flags {
  std::string plan;
  std::string listen = "127.0.0.1:7070";
  int workers = 2;
  int64_t tokens = 0;
  double lr = 0.1;
  bool json = false;
  absl::Duration heartbeat = absl::Seconds(1);
};

CommandLine Make(Flags* f) {
  CommandLine cl("loom test", "A test command.");
  cl.AddPositional("PLAN", &f->plan, "plan file");
  cl.AddFlag("listen", &f->listen, "address");
  cl.AddFlag("workers", &f->workers, "worker count");
  cl.AddFlag("tokens", &f->tokens, "tokens");
  cl.AddFlag("lr", &f->lr, "learning rate");
  cl.AddFlag("json", &f->json, "print JSON");
  cl.AddFlag("heartbeat", &f->heartbeat, "heartbeat interval");
  return cl;
}

TEST(CommandLine, ParsesEveryFlagForm) {
  Flags f;
  CommandLine cl = Make(&f);
  ASSERT_TRUE(cl.Parse({"--workers", "4", "plan.yaml", "--tokens=2M", "--lr", "3e-4", "--json",
                        "--heartbeat=250ms", "--listen=127.0.0.1:0"})
                  .ok());
  EXPECT_EQ(f.plan, "plan.yaml");
  EXPECT_EQ(f.workers, 4);
  EXPECT_EQ(f.tokens, 2'000'000);
  EXPECT_DOUBLE_EQ(f.lr, 3e-4);
  EXPECT_TRUE(f.json);
  EXPECT_EQ(f.heartbeat, absl::Milliseconds(250));
  EXPECT_EQ(f.listen, "127.0.0.1:0");
  EXPECT_FALSE(cl.help_requested());
}

TEST(CommandLine, DurationsInDays) {
  Flags f;
  CommandLine cl = Make(&f);
  ASSERT_TRUE(cl.Parse({"p", "--heartbeat", "7d"}).ok());
  EXPECT_EQ(f.heartbeat, absl::Hours(24 * 7));
  ASSERT_TRUE(cl.Parse({"p", "--heartbeat", "0"}).ok());
  EXPECT_EQ(f.heartbeat, absl::ZeroDuration());
  EXPECT_FALSE(cl.Parse({"p", "--heartbeat", "-1d"}).ok());
  EXPECT_FALSE(cl.Parse({"p", "--heartbeat", "d"}).ok());
}

TEST(CommandLine, NegatedBoolean) {
  Flags f;
  f.json = true;
  CommandLine cl = Make(&f);
  ASSERT_TRUE(cl.Parse({"p", "--no-json"}).ok());
  EXPECT_FALSE(f.json);
}

TEST(CommandLine, ErrorsNameTheFlagAndSuggest) {
  Flags f;
  CommandLine cl = Make(&f);
  absl::Status s = cl.Parse({"p", "--worker", "3"});
  EXPECT_EQ(s.message(), "unknown flag --worker (did you mean 'workers'?)");
  Flags g;
  CommandLine c2 = Make(&g);
  s = c2.Parse({"p", "--workers", "many"});
  EXPECT_EQ(s.message(), "--workers: 'many' is not a whole number");
  Flags h;
  CommandLine c3 = Make(&h);
  EXPECT_EQ(c3.Parse({}).message(), "missing PLAN: plan file");
  Flags k;
  CommandLine c4 = Make(&k);
  EXPECT_EQ(c4.Parse({"p", "--listen"}).message(), "--listen needs a value");
  Flags m;
  CommandLine c5 = Make(&m);
  EXPECT_EQ(c5.Parse({"p", "q"}).message(), "unexpected argument 'q'");
}

TEST(CommandLine, HelpListsFlagsWithDefaults) {
  Flags f;
  CommandLine cl = Make(&f);
  ASSERT_TRUE(cl.Parse({"--help"}).ok());
  EXPECT_TRUE(cl.help_requested());
  const std::string usage = cl.Usage();
  EXPECT_NE(usage.find("usage: loom test [flags] PLAN"), std::string::npos) << usage;
  EXPECT_NE(usage.find("--workers N"), std::string::npos) << usage;
  EXPECT_NE(usage.find("(default 2)"), std::string::npos) << usage;
  EXPECT_NE(usage.find("(default \"127.0.0.1:7070\")"), std::string::npos) << usage;
  EXPECT_NE(usage.find("(default 1s)"), std::string::npos) << usage;
}

TEST(CommandLine, VersionIsBuiltIn) {
  // The version is project(VERSION) of the top-level CMakeLists.txt.
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream cmake;
  cmake << in.rdbuf();
  std::smatch m;
  const std::string text = cmake.str();
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(project\(loom VERSION (\d+\.\d+\.\d+))")));
  EXPECT_EQ(std::string(Version()), m[1].str());

  Flags f;
  CommandLine cl = Make(&f);
  // Nothing after --version is read, and the required PLAN may be missing.
  ASSERT_TRUE(cl.Parse({"--version", "--no-such-flag"}).ok());
  EXPECT_TRUE(cl.version_requested());
  EXPECT_FALSE(cl.help_requested());
  EXPECT_EQ(cl.VersionLine(), std::string("loom test ") + Version());
  EXPECT_NE(cl.Usage().find("--version"), std::string::npos) << cl.Usage();

  // After `--` it is a positional like any other.
  Flags g;
  CommandLine c2 = Make(&g);
  ASSERT_TRUE(c2.Parse({"--", "--version"}).ok());
  EXPECT_FALSE(c2.version_requested());
  EXPECT_EQ(g.plan, "--version");
}

TEST(CommandLine, ParseOrExitPrintsTheVersionAndExitsZero) {
  Flags f;
  CommandLine cl = Make(&f);
  int exit_code = -1;
  ::testing::internal::CaptureStdout();
  const bool go_on = ParseOrExit(cl, {"--version"}, &exit_code);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_FALSE(go_on);
  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(out, std::string("loom test ") + Version() + "\n");
}

}  // namespace
}  // namespace loom
