// Robustness: random truncations and mutations of real plans, and hostile inputs, must never
// crash or hang the parser, the validator or the summary; each must end in a plan or in errors.
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "common/plan_io.h"
#include "common/plan_summary.h"
#include "common/plan_validation.h"
#include "plan_test_util.h"

namespace loom {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Parses, validates and summarises; returns whether the text became a valid plan.
bool Exercise(const std::string& text, PlanFormat format) {
  ParsedPlan parsed = ParsePlanText(text, format);
  for (const PlanError& e : parsed.errors) EXPECT_FALSE(e.message.empty());
  if (!parsed.errors.empty()) return false;
  const std::vector<PlanError> errors = ValidatePlan(parsed.plan);
  for (const PlanError& e : errors) EXPECT_FALSE(e.message.empty());
  if (!errors.empty()) return false;
  EXPECT_FALSE(SummarizePlan(parsed.plan).empty());
  return true;
}

std::string Mutate(const std::string& text, std::mt19937& rng) {
  static const std::string kSpecial = "{}[]:-,'\"\n #&*!|>%@`?\t0123456789.eMKBi";
  std::string out = text;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !out.empty(); ++e) {
    const size_t pos = rng() % out.size();
    switch (rng() % 6) {
      case 0:
        out.resize(pos);
        break;  // truncate
      case 1:
        out[pos] = kSpecial[rng() % kSpecial.size()];
        break;  // replace a byte
      case 2:
        out.insert(pos, 1, kSpecial[rng() % kSpecial.size()]);
        break;  // insert
      case 3:
        out.erase(pos, 1 + rng() % 16);
        break;  // delete a run
      case 4:
        out[pos] = static_cast<char>(rng() % 256);
        break;   // any byte
      case 5: {  // duplicate a line
        const size_t start = out.rfind('\n', pos);
        const size_t end = out.find('\n', pos);
        const size_t s = start == std::string::npos ? 0 : start + 1;
        out.insert(s, out.substr(s, (end == std::string::npos ? out.size() : end + 1) - s));
        break;
      }
    }
  }
  return out;
}

TEST(PlanFuzz, MutatedExamplePlansNeverCrash) {
  std::mt19937 rng(20261124);
  int still_valid = 0, total = 0;
  for (const auto& entry : std::filesystem::directory_iterator(loom::testing::ExampleDir())) {
    const std::string text = ReadFile(entry.path().string());
    ASSERT_TRUE(Exercise(text, PlanFormat::kYaml)) << entry.path();
    for (int i = 0; i < 600; ++i) {
      still_valid += Exercise(Mutate(text, rng), PlanFormat::kYaml);
      ++total;
    }
  }
  // Some mutations hit comments or whitespace and leave a valid plan: the test sees both paths.
  EXPECT_GT(still_valid, 0);
  EXPECT_LT(still_valid, total);
}

TEST(PlanFuzz, TruncationAtEveryLineNeverCrashes) {
  const std::string text = ReadFile(loom::testing::ExampleDir() + "/gemma2_tiny.yaml");
  for (size_t pos = text.find('\n'); pos != std::string::npos; pos = text.find('\n', pos + 1)) {
    Exercise(text.substr(0, pos), PlanFormat::kYaml);
    Exercise(text.substr(0, pos), PlanFormat::kTextproto);
  }
}

TEST(PlanFuzz, HostileInputsEndInErrors) {
  const std::vector<std::string> hostile = {
      std::string(200000, '['),  // deep flow nesting
      [] {
        std::string s;
        for (int i = 0; i < 20000; ++i) s += "{a: ";
        return s;
      }(),
      [] {
        std::string s;
        for (int i = 0; i < 3000; ++i) s += std::string(i, ' ') + "a:\n";
        return s;
      }(),
      "&a [*a, *a]",  // self-referencing alias
      "a: &x b\nb: *x\nc: *undefined\n",
      std::string("\0\0\0", 3),
      "stages: [" + std::string(100000, ',') + "]",
      "%YAML 9.9\n---\nname: x\n",
      "--- !!binary\nAAAA\n",
      "name: [x]\nmodel: 'str'\nstages: 5\n",
  };
  for (const std::string& text : hostile) {
    EXPECT_FALSE(Exercise(text, PlanFormat::kYaml)) << text.substr(0, 40);
    Exercise(text, PlanFormat::kTextproto);
  }
}

TEST(PlanFuzz, RandomBytesNeverCrash) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string text(rng() % 512, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    Exercise(text, PlanFormat::kYaml);
    Exercise(text, PlanFormat::kTextproto);
  }
}

}  // namespace
}  // namespace loom
