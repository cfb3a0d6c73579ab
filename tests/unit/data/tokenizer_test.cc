#include "data/tokenizer.h"

#include <string>
#include <vector>

#include "common/plan_io.h"
#include "common/sha256.h"
#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using testing::TempDir;
using testing::TinyTokenizerModel;

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tok = Tokenizer::Load(TinyTokenizerModel());
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = *std::move(tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(TokenizerTest, HasRequestedVocabAndSpecialPieces) {
  EXPECT_EQ(tok_->vocab_size(), 320);
  EXPECT_EQ(tok_->unk_id(), 0);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->pad_id(), 3);
  EXPECT_EQ(tok_->PieceToId(kImStart), 4);
  EXPECT_EQ(tok_->PieceToId(kImEnd), 5);
  EXPECT_EQ(tok_->PieceToId("<|no_such_piece|>"), -1);
}

TEST_F(TokenizerTest, HashIsSha256OfTheModelFile) {
  auto expected = Sha256File(TinyTokenizerModel());
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(tok_->hash(), *expected);
}

TEST_F(TokenizerTest, RoundTripsAnyTextExactly) {
  const std::vector<std::string> texts = {
      "the model reads tokens.",    "  leading and  double  spaces\n\tand tabs\n",
      "über naïve число año 12345", "never seen: 漢字 and emoji 🙂 fall back to bytes",
      "int main() { return 0; }",   ""};
  for (const std::string& text : texts) EXPECT_EQ(tok_->Decode(tok_->Encode(text)), text) << text;
}

TEST_F(TokenizerTest, EncodingPiecesSeparatelyConcatenates) {
  // No dummy prefix: encoding "a" and "b" apart decodes to "ab", which chat templates rely on.
  const std::string a = "<|im_start|>user\nwhat is 2 + 2?", b = "<|im_end|>\n";
  std::vector<int32_t> ids = tok_->Encode(a);
  const std::vector<int32_t> tail = tok_->Encode(b);
  ids.insert(ids.end(), tail.begin(), tail.end());
  EXPECT_EQ(tok_->Decode(ids), a + b);
  EXPECT_EQ(tok_->Encode(kImEnd), std::vector<int32_t>{tok_->PieceToId(kImEnd)});
}

TEST_F(TokenizerTest, ParallelEncodingMatchesSequential) {
  const std::vector<std::string> docs = testing::GeneratedSentences(500, 99);
  std::vector<std::string_view> views(docs.begin(), docs.end());
  size_t last_done = 0;
  const auto parallel = tok_->EncodeBatch(views, 2, [&](size_t done, size_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_EQ(total, docs.size());
    last_done = done;
  });
  EXPECT_EQ(last_done, docs.size());
  ASSERT_EQ(parallel.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(parallel[i], tok_->Encode(docs[i])) << i;
}

// Debian's libsentencepiece bundles protobuf 3.14; Loom's plan code uses the system's 3.21. Both
// must work in one process, in either order (data/sentencepiece_backend.h explains how).
TEST_F(TokenizerTest, CoexistsWithTheSystemProtobufInOneProcess) {
  auto plan = LoadPlan(std::string(LOOM_SOURCE_DIR) + "/examples/plans/llama3_tiny.yaml");
  ASSERT_TRUE(plan.ok()) << plan.status();
  const std::vector<int32_t> ids = tok_->Encode("the model reads tokens.");
  EXPECT_EQ(tok_->Decode(ids), "the model reads tokens.");
  EXPECT_FALSE(plan->SerializeAsString().empty());
}

TEST(TokenizerLoad, MissingAndBogusFilesNameTheFile) {
  TempDir dir;
  auto missing = Tokenizer::Load(dir / "nope.model");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), ::testing::HasSubstr("nope.model"));
  testing::WriteText(dir / "bogus.model", "not a model");
  auto bogus = Tokenizer::Load(dir / "bogus.model");
  ASSERT_FALSE(bogus.ok());
  EXPECT_THAT(std::string(bogus.status().message()), ::testing::HasSubstr("bogus.model"));
}

TEST(TokenizerTrain, RejectsTinyVocabWithTheOption) {
  TokenizerTrainOptions options;
  options.inputs = {"x"};
  options.model_prefix = "y";
  options.vocab_size = 10;
  const absl::Status status = TrainTokenizer(options);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("vocab_size"));
}

}  // namespace
}  // namespace loom::data
