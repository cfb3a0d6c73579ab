#include "data/shard.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::data {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

const std::string kHashA(64, 'a');
const std::string kHashB(64, 'b');

std::vector<std::vector<int32_t>> SomeDocs(int vocab) {
  return {{1, 2, 3}, {}, {vocab - 1, 0, 7, 7, 7}, {42}};
}

TEST(Shard, RoundTripsDocumentsAndHeader) {
  for (int vocab : {500, 65536, 70000}) {
    TempDir dir;
    const auto docs = SomeDocs(vocab);
    auto writer = ShardWriter::Create(dir / "s.bin", kHashA, vocab);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (const auto& d : docs) ASSERT_TRUE((*writer)->AddDocument(d).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    EXPECT_FALSE(std::filesystem::exists(dir / "s.bin.tmp"));

    auto reader = ShardReader::Open(dir / "s.bin", {kHashA, vocab});
    ASSERT_TRUE(reader.ok()) << reader.status();
    const ShardReader& r = **reader;
    EXPECT_EQ(r.token_width(), vocab <= 65536 ? 2 : 4);
    EXPECT_EQ(r.vocab_size(), vocab);
    EXPECT_EQ(r.tokenizer_hash(), kHashA);
    EXPECT_EQ(r.doc_count(), 4);
    EXPECT_EQ(r.token_count(), 9);
    for (size_t d = 0; d < docs.size(); ++d) EXPECT_EQ(r.Document(static_cast<int64_t>(d)), docs[d]);
    EXPECT_TRUE(r.Verify().ok());
    const int64_t size = static_cast<int64_t>(std::filesystem::file_size(dir / "s.bin"));
    EXPECT_EQ(size, (kShardHeaderBytes + 9 * r.token_width() + 7) / 8 * 8 + 8 * 5);
  }
}

TEST(Shard, WrongTokenizerIsRefusedNamingTheFile) {
  TempDir dir;
  ASSERT_TRUE(WriteShardDir(dir / "english/train", SomeDocs(500), kHashA, 500).ok());
  const std::string path = dir / "english/train/shard-00000.bin";

  auto wrong_hash = ShardReader::Open(path, {kHashB, 500});
  ASSERT_FALSE(wrong_hash.ok());
  EXPECT_EQ(wrong_hash.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong_hash.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(wrong_hash.status().message()), HasSubstr("tokenizer"));

  auto wrong_vocab = ShardReader::Open(path, {kHashA, 501});
  ASSERT_FALSE(wrong_vocab.ok());
  EXPECT_THAT(std::string(wrong_vocab.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(wrong_vocab.status().message()), HasSubstr("vocab size 500"));

  auto dir_wrong = OpenShardDir(dir / "english/train", {kHashB, 0});
  ASSERT_FALSE(dir_wrong.ok());
  EXPECT_THAT(std::string(dir_wrong.status().message()), HasSubstr(path));
}

TEST(Shard, CorruptFilesAreRefused) {
  TempDir dir;
  ASSERT_TRUE(WriteShardDir(dir.path(), SomeDocs(500), kHashA, 500).ok());
  const std::string path = dir / "shard-00000.bin";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 8);
  auto truncated = ShardReader::Open(path);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("corrupt"));
  testing::WriteText(dir / "other.bin", std::string(200, 'x'));
  EXPECT_THAT(std::string(ShardReader::Open(dir / "other.bin").status().message()), HasSubstr("magic"));
}

// Writes `docs` as a valid shard of `vocab`, then overwrites token `index` with `id` in place (as a
// corrupted or hand-made file would carry it).
std::string ShardWithPatchedToken(const TempDir& dir, int vocab, int64_t index, uint32_t id) {
  const std::string path = dir / "patched.bin";
  auto writer = ShardWriter::Create(path, kHashA, vocab);
  EXPECT_TRUE(writer.ok()) << writer.status();
  EXPECT_TRUE((*writer)->AddDocument(std::vector<int32_t>{1, 2, 3, 4, 5}).ok());
  EXPECT_TRUE((*writer)->Finish().ok());
  const int width = vocab <= 65536 ? 2 : 4;
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(kShardHeaderBytes + index * width);
  f.write(reinterpret_cast<const char*>(&id), width);  // little-endian: the low bytes first
  return path;
}

TEST(Shard, OutOfRangeIdIsRefusedAtOpenNamingFileAndOffset) {
  for (int vocab : {500, 70000}) {
    TempDir dir;
    const std::string path = ShardWithPatchedToken(dir, vocab, 3, static_cast<uint32_t>(vocab));
    auto reader = ShardReader::Open(path, {kHashA, vocab});
    ASSERT_FALSE(reader.ok()) << "vocab " << vocab;
    const std::string message(reader.status().message());
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(message, HasSubstr(path));
    EXPECT_THAT(message, HasSubstr("token 3"));
    EXPECT_THAT(message, HasSubstr(absl::StrCat("byte offset ", kShardHeaderBytes + 3 * (vocab <= 65536 ? 2 : 4))));
    EXPECT_THAT(message, HasSubstr("re-prepare"));
    EXPECT_FALSE(OpenShardDir(dir.path()).ok());
  }
  TempDir dir;  // a negative id in a 4-byte shard
  auto negative = ShardReader::Open(ShardWithPatchedToken(dir, 70000, 0, 0xFFFFFFFFu));
  ASSERT_FALSE(negative.ok());
  EXPECT_THAT(std::string(negative.status().message()), HasSubstr("has id -1"));
}

// Header fields are untrusted: counts that would overflow the size arithmetic are refused.
TEST(Shard, HeaderCountsThatOverflowAreRefused) {
  struct Patch {
    int offset;
    uint64_t value;
    int bytes;
  };
  for (const Patch& p : {Patch{24, ~uint64_t{0}, 8}, Patch{24, uint64_t{1} << 63, 8},
                         Patch{32, ~uint64_t{0}, 8}, Patch{32, (~uint64_t{0}) / 8, 8},
                         Patch{40, ~uint64_t{0} - 7, 8}, Patch{16, 0, 4}, Patch{16, 0x80000000u, 4}}) {
    TempDir dir;
    ASSERT_TRUE(WriteShardDir(dir.path(), SomeDocs(500), kHashA, 500).ok());
    const std::string path = dir / "shard-00000.bin";
    {
      std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(p.offset);
      f.write(reinterpret_cast<const char*>(&p.value), p.bytes);
    }
    auto reader = ShardReader::Open(path);
    ASSERT_FALSE(reader.ok()) << "offset " << p.offset << " value " << p.value;
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kDataLoss) << reader.status();
    EXPECT_THAT(std::string(reader.status().message()), HasSubstr(path));
  }
}

TEST(Shard, WriterRejectsIdsOutsideTheVocab) {
  TempDir dir;
  auto writer = ShardWriter::Create(dir / "s.bin", kHashA, 10);
  ASSERT_TRUE(writer.ok());
  EXPECT_FALSE((*writer)->AddDocument(std::vector<int32_t>{3, 10}).ok());
  EXPECT_FALSE((*writer)->AddDocument(std::vector<int32_t>{-1}).ok());
}

TEST(Shard, DirectorySplitsAtTheTokenLimitWithoutSplittingDocuments) {
  TempDir dir;
  std::vector<std::vector<int32_t>> docs;
  for (int d = 0; d < 10; ++d) docs.push_back(std::vector<int32_t>(7, d));
  auto shards = WriteShardDir(dir.path(), docs, kHashA, 500, 20);
  ASSERT_TRUE(shards.ok());
  EXPECT_EQ(*shards, 5);  // 2 documents (14 tokens) per shard
  auto readers = OpenShardDir(dir.path(), {kHashA, 500});
  ASSERT_TRUE(readers.ok()) << readers.status();
  std::vector<std::vector<int32_t>> back;
  for (const auto& r : *readers) {
    for (int64_t d = 0; d < r->doc_count(); ++d) back.push_back(r->Document(d));
  }
  EXPECT_EQ(back, docs);
}

}  // namespace
}  // namespace loom::data
