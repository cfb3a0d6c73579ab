// Hugging Face byte-level BPE (data/byte_level_bpe.h) through Tokenizer, on tokenizer.json files
// written by hand here: merge order, added tokens, both merge spellings, bytes that are not
// UTF-8, threads, long pieces, and an error naming the field for each kind of bad file. Exactness
// on real text against a reference encoder is bpe_reference_test.py's job.
#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "data/chat.h"
#include "data/tokenizer.h"
#include "data_test_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/data/bpe_fixture.h"

namespace loom::data {
namespace {

using Json = nlohmann::json;
using testing::ByteChar;
using testing::HandTokenizer;
using testing::Mapped;
using testing::TempDir;
using testing::WriteText;

HandTokenizer Words() {
  HandTokenizer h;
  h.merges = {{" ", "t"},    {"l", "l"}, {"e", "ll"},  {"h", "ell"},
              {"hell", "o"}, {"h", "e"}, {" t", "he"}, {"a", "a"}};
  return h;
}

class ByteLevelBpeTest : public ::testing::Test {
 protected:
  std::unique_ptr<Tokenizer> Load(const Json& j, const std::string& name = "tokenizer.json") {
    const std::string path = dir_ / name;
    WriteText(path, j.dump());
    auto tok = Tokenizer::Load(path);
    EXPECT_TRUE(tok.ok()) << tok.status();
    return tok.ok() ? *std::move(tok) : nullptr;
  }
  std::string LoadError(const Json& j) {
    const std::string path = dir_ / "bad.json";
    WriteText(path, j.dump());
    auto tok = Tokenizer::Load(path);
    return tok.ok() ? "loaded" : std::string(tok.status().message());
  }
  TempDir dir_;
};

TEST_F(ByteLevelBpeTest, MergesByRankAndDecodesBack) {
  auto tok = Load(Words().Build());
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->kind(), "byte-level-bpe");
  const int32_t hello = tok->PieceToId("hello"), the = tok->PieceToId(Mapped(" the"));
  ASSERT_GE(hello, 256);
  ASSERT_GE(the, 256);
  // "hello" by l+l, e+ll, h+ell, hell+o; " the" by " "+t, h+e, " t"+he; " x" has no merge.
  EXPECT_EQ(tok->Encode("hello the x"), (std::vector<int32_t>{hello, the, ' ', 'x'}));
  EXPECT_EQ(tok->IdToPiece(the), Mapped(" the"));
  EXPECT_EQ(tok->Decode(tok->Encode("hello the x")), "hello the x");
  // Equal ranks: the leftmost pair first, so "aaa" is "aa" + "a".
  const int32_t aa = tok->PieceToId("aa");
  EXPECT_EQ(tok->Encode("aaa"), (std::vector<int32_t>{aa, 'a'}));
  EXPECT_EQ(tok->Encode("aaaa"), (std::vector<int32_t>{aa, aa}));
  // The pre-tokenizer keeps merges inside words: "he" across a space is two pieces.
  EXPECT_EQ(tok->Encode("h e"), (std::vector<int32_t>{'h', ' ', 'e'}));
}

TEST_F(ByteLevelBpeTest, AMergeListedTwiceTakesItsLastRank) {
  HandTokenizer h;
  h.merges = {{"a", "b"}, {"b", "c"}, {"a", "b"}};
  auto tok = Load(h.Build());
  ASSERT_NE(tok, nullptr);
  // a+b is rank 2 (its second listing), b+c rank 1: "abc" is "a" + "bc".
  EXPECT_EQ(tok->Encode("abc"), (std::vector<int32_t>{'a', tok->PieceToId("bc")}));
}

TEST_F(ByteLevelBpeTest, MergesAsPairsEqualMergesAsStrings) {
  HandTokenizer pairs = Words();
  pairs.pairs = true;
  auto a = Load(Words().Build(), "a.json");
  auto b = Load(pairs.Build(), "b.json");
  ASSERT_TRUE(a && b);
  const std::string text = "hello there, the hell of it\n  aaa";
  EXPECT_EQ(a->Encode(text), b->Encode(text));
  EXPECT_NE(a->hash(), b->hash());
}

TEST_F(ByteLevelBpeTest, Llama3PatternGroupsDigitsInThreesAndFoldsContractions) {
  HandTokenizer h;
  h.merges = {{"3", "4"}, {"1", "2"}, {"12", "3"}, {"'", "S"}};
  auto gpt2 = Load(h.Build(), "gpt2.json");
  h.llama3 = true;
  h.pairs = true;
  auto llama3 = Load(h.Build(), "llama3.json");
  ASSERT_TRUE(gpt2 && llama3);
  const int32_t m34 = gpt2->PieceToId("34"), m12 = gpt2->PieceToId("12"), m123 = gpt2->PieceToId("123");
  const int32_t apostrophe_s = gpt2->PieceToId("'S");
  // GPT-2: one piece of digits, so 3+4 (rank 0) wins; Llama-3: "123" and "4".
  EXPECT_EQ(gpt2->Encode("1234"), (std::vector<int32_t>{m12, m34}));
  EXPECT_EQ(llama3->Encode("1234"), (std::vector<int32_t>{m123, '4'}));
  // GPT-2's contractions are lower case only; Llama-3's (?i:...) takes "'S" as one piece.
  EXPECT_EQ(gpt2->Encode("IT'S"), (std::vector<int32_t>{'I', 'T', '\'', 'S'}));
  EXPECT_EQ(llama3->Encode("IT'S"), (std::vector<int32_t>{'I', 'T', apostrophe_s}));
}

TEST_F(ByteLevelBpeTest, AddedTokensAreMatchedLongestFirstAndNeverSplit) {
  auto tok = Load(Words().Build());
  ASSERT_NE(tok, nullptr);
  const int32_t start = tok->PieceToId(kImStart), end = tok->PieceToId(kImEnd), im = tok->PieceToId("<|im");
  const int32_t eos = tok->PieceToId("<|endoftext|>");
  ASSERT_GE(start, 0);
  ASSERT_GE(im, 0);
  EXPECT_EQ(tok->eos_id(), eos);
  EXPECT_EQ(tok->bos_id(), -1);
  EXPECT_EQ(tok->pad_id(), -1);
  EXPECT_EQ(tok->unk_id(), -1);
  EXPECT_EQ(tok->Encode("x<|im_start|>y<|im_end|><|im"), (std::vector<int32_t>{'x', start, 'y', end, im}));
  EXPECT_EQ(tok->Decode({start, 'h', 'i', end}), "<|im_start|>hi<|im_end|>");
  // A chat template finds its pieces.
  Conversation c = {{"user", "hello"}, {"assistant", "the"}};
  auto example = TokenizeConversation(c, ChatTemplate::kChatML, *tok);
  ASSERT_TRUE(example.ok()) << example.status();
  EXPECT_EQ(example->tokens.front(), start);
}

TEST_F(ByteLevelBpeTest, ChatTemplateWithoutItsPiecesSaysWhatIsMissing) {
  HandTokenizer h = Words();
  h.added = {"<|endoftext|>"};
  auto tok = Load(h.Build());
  ASSERT_NE(tok, nullptr);
  Conversation c = {{"user", "hello"}, {"assistant", "the"}};
  auto example = TokenizeConversation(c, ChatTemplate::kChatML, *tok);
  ASSERT_FALSE(example.ok());
  EXPECT_NE(std::string(example.status().message())
                .find("has no piece <|im_start|>: a tokenizer.json needs it in added_tokens"),
            std::string::npos)
      << example.status();
  // Alpaca's end of response is the tokenizer's end of text.
  auto alpaca = EndOfTurnToken(ChatTemplate::kAlpaca, *tok);
  ASSERT_TRUE(alpaca.ok()) << alpaca.status();
  EXPECT_EQ(*alpaca, tok->eos_id());
}

TEST_F(ByteLevelBpeTest, BytesThatAreNotUtf8RoundTrip) {
  auto tok = Load(Words().Build());
  ASSERT_NE(tok, nullptr);
  for (const std::string text : {std::string("\xff\xfe hello \xc3 the\xe2\x82 x\x80\x80"),
                                 std::string("\xed\xa0\x80 surrogate, \xf4\x90\x80\x80 past U+10FFFF"),
                                 std::string("nul \0 inside", 12), std::string("\xc3\xa9\xcc\x81")}) {
    const std::vector<int32_t> ids = tok->Encode(text);
    EXPECT_EQ(tok->Decode(ids), text);
  }
  // Random bytes, with pieces of added tokens and whitespace mixed in.
  std::mt19937 rng(7);
  const std::string bits = "<|im_start|>\n \t";
  for (int i = 0; i < 2000; ++i) {
    std::string text(rng() % 120, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 3 == 0 ? bits[rng() % bits.size()] : rng());
    ASSERT_EQ(tok->Decode(tok->Encode(text)), text) << "random text " << i;
  }
}

TEST_F(ByteLevelBpeTest, EncodeBatchOnThreadsEqualsEncode) {
  auto tok = Load(Words().Build());
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> docs;
  for (int i = 0; i < 400; ++i)
    docs.push_back("hello " + std::to_string(i * 7919) + " the hell<|im_end|> aaa" +
                   std::string(i % 13, ' '));
  std::vector<std::string_view> views(docs.begin(), docs.end());
  const auto batch = tok->EncodeBatch(views, 4);
  ASSERT_EQ(batch.size(), docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    EXPECT_EQ(batch[i], tok->Encode(docs[i])) << docs[i];
    EXPECT_EQ(tok->Decode(batch[i]), docs[i]);
  }
}

TEST_F(ByteLevelBpeTest, LongPiecesMergeInNearLinearTime) {
  auto tok = Load(Words().Build());
  ASSERT_NE(tok, nullptr);
  const std::string text = std::string(1 << 20, 'a') + std::string(1 << 18, ' ') + "x";
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tok->Encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids.size(), (size_t{1} << 19) + (size_t{1} << 18) + 1);
  EXPECT_EQ(tok->Decode(ids), text);
  EXPECT_LT(seconds, 10.0);
}

TEST_F(ByteLevelBpeTest, ChosenByContentAndHashedByBytes) {
  const std::string path = dir_ / "tokenizer.bin";  // no .json: the leading `{` decides
  WriteText(path, "  \n" + Words().Build().dump(1));
  auto tok = Tokenizer::Load(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->kind(), "byte-level-bpe");
  EXPECT_EQ((*tok)->hash(), *Sha256File(path));
  EXPECT_EQ((*tok)->vocab_size(), 256 + 8 + 4);
}

TEST_F(ByteLevelBpeTest, DefaultTokenizerPathFindsTheJson) {
  EXPECT_EQ(DefaultTokenizerPath(dir_.path()), dir_ / "tokenizer.model");
  WriteText(dir_ / "tokenizer.json", "{}");
  EXPECT_EQ(DefaultTokenizerPath(dir_.path()), dir_ / "tokenizer.json");
  WriteText(dir_ / "tokenizer.model", "x");
  EXPECT_EQ(DefaultTokenizerPath(dir_.path()), dir_ / "tokenizer.model");
}

TEST_F(ByteLevelBpeTest, BadFilesAreRefusedNamingTheField) {
  struct Case {
    const char* what;
    std::function<void(Json&)> mutate;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"model type", [](Json& j) { j["model"]["type"] = "WordPiece"; },
       "model.type: \"WordPiece\" is not supported"},
      {"merge of a piece not in the vocab", [](Json& j) { j["model"]["merges"][2] = Mapped(" t") + " zz"; },
       "model.merges[2]: \"" + Mapped(" t") + " zz\": \"zz\" is not in model.vocab"},
      {"merge result not in the vocab", [](Json& j) { j["model"]["merges"].push_back("x y"); },
       "model.merges[8]: \"x y\": the result \"xy\" is not in model.vocab"},
      {"merge that is not two pieces", [](Json& j) { j["model"]["merges"][0] = "a b c"; },
       "model.merges[0]: \"a b c\" is not two pieces"},
      {"merge of another type", [](Json& j) { j["model"]["merges"][1] = 7; }, "model.merges[1]: expected"},
      {"gap in the ids", [](Json& j) { j["model"]["vocab"].erase("hello"); },
       "model.vocab: no piece has id 260"},
      {"negative id", [](Json& j) { j["model"]["vocab"]["zz"] = -3; },
       "model.vocab[\"zz\"]: id -3 is out of range"},
      {"two pieces, one id", [](Json& j) { j["model"]["vocab"]["zz"] = 5; }, "is also"},
      {"missing byte",
       [](Json& j) {
         j["model"]["vocab"].erase(ByteChar(0));
         j["model"]["vocab"]["zz"] = 0;
       },
       "model.vocab: has no piece for byte 0x00"},
      {"added token on a vocab id", [](Json& j) { j["added_tokens"][0]["id"] = 65; },
       "added_tokens[0].id: 65 is model.vocab's \"A\""},
      {"lstrip", [](Json& j) { j["added_tokens"][1]["lstrip"] = true; },
       "added_tokens[1].lstrip: true is not supported"},
      {"no end of text", [](Json& j) { j["added_tokens"][0]["content"] = "<|something|>"; },
       "added_tokens: has no end-of-text token"},
      {"other pattern",
       [](Json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}},
               {{"type", "ByteLevel"}, {"use_regex", false}}}}};
       },
       "pre_tokenizer.pretokenizers[0].pattern.Regex: the pattern \\w+ is not one Loom supports"},
      {"double split",
       [](Json& j) {
         j["pre_tokenizer"] = {
             {"type", "Sequence"},
             {"pretokenizers",
              {{{"type", "Split"}, {"pattern", {{"Regex", "x"}}}}, {{"type", "ByteLevel"}}}}};
       },
       "pre_tokenizer.pretokenizers[1].use_regex: must be false"},
      {"prefix space", [](Json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; },
       "pre_tokenizer.add_prefix_space: true is not supported"},
      {"metaspace",
       [](Json& j) {
         j["pre_tokenizer"] = {{"type", "Metaspace"}};
       },
       "pre_tokenizer.type: \"Metaspace\" is not supported"},
      {"no decoder", [](Json& j) { j.erase("decoder"); }, "decoder: must be {\"type\": \"ByteLevel\"}"},
      {"normalizer",
       [](Json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "normalizer.type: \"Lowercase\" is not supported"},
      {"dropout", [](Json& j) { j["model"]["dropout"] = 0.1; }, "model.dropout"},
      {"vocab of strings", [](Json& j) { j["model"]["vocab"]["zz"] = "1"; },
       "model.vocab[\"zz\"]: expected an integer id"},
      {"no model", [](Json& j) { j.erase("model"); }, "model: missing"},
  };
  for (const Case& c : cases) {
    Json j = Words().Build();
    c.mutate(j);
    const std::string error = LoadError(j);
    EXPECT_NE(error.find(c.expected), std::string::npos) << c.what << ": got " << error;
    EXPECT_NE(error.find("bad.json"), std::string::npos) << c.what << ": the error names no file: " << error;
  }
  WriteText(dir_ / "broken.json", "{\"model\": ");
  auto broken = Tokenizer::Load(dir_ / "broken.json");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(std::string(broken.status().message()).find("not a JSON object"), std::string::npos)
      << broken.status();
}

}  // namespace
}  // namespace loom::data
