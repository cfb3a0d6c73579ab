// Token shards: the binary files `loom data prepare` writes and the sampler memory-maps.
//
// One file holds whole documents of one source and split, as token ids, and a document index.
// The layout (all integers little-endian; data/README.md has the same table):
//
//   offset  size  field
//   0       8     magic "LOOMSHRD"
//   8       4     u32 version (1)
//   12      4     u32 token width in bytes: 2 (uint16 ids, vocab <= 65536) or 4 (uint32 ids)
//   16      4     u32 vocab size of the tokenizer
//   20      4     u32 reserved, 0
//   24      8     u64 token count
//   32      8     u64 document count
//   40      8     u64 byte offset of the document index (a multiple of 8)
//   48      64    tokenizer hash: SHA-256 of the tokenizer model file, 64 ASCII hex digits
//   112     16    reserved, 0
//   128     ...   token ids, token count x width
//   index   ...   document count + 1 u64 token offsets: document d is tokens [idx[d], idx[d+1])
//
// A reader refuses a shard whose tokenizer hash or vocab size differs from the expected ones, with
// an error naming the file: training on ids from another vocabulary would silently be garbage.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom::data {

inline constexpr int kShardHeaderBytes = 128;
inline constexpr uint32_t kShardVersion = 1;

// What a reader checks a shard against. Empty / 0 fields accept anything.
struct ShardExpectation {
  std::string tokenizer_hash;
  int vocab_size = 0;
};

// Writes one shard: documents are appended, Finish() writes the index and header, fsyncs, and
// renames the file into place (a crash leaves no half-written shard under the final name).
class ShardWriter {
 public:
  static absl::StatusOr<std::unique_ptr<ShardWriter>> Create(const std::string& path,
                                                             const std::string& tokenizer_hash,
                                                             int vocab_size);
  ~ShardWriter();  // without Finish(), removes the temporary file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Every id must be in [0, vocab_size).
  absl::Status AddDocument(std::span<const int32_t> tokens);
  absl::Status Finish();

  int64_t token_count() const { return index_.back(); }
  int64_t doc_count() const { return static_cast<int64_t>(index_.size()) - 1; }

 private:
  ShardWriter(std::string path, std::string tmp_path, std::FILE* file, std::string hash, int vocab);
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_;
  std::string hash_;
  int vocab_size_;
  int width_;
  std::vector<uint64_t> index_{0};
  bool finished_ = false;
};

// A memory-mapped shard. Open checks the header (overflow-safe), the index and every id (one
// sequential pass, via Verify), so ids read later are always in [0, vocab_size); safe to read from
// many threads.
class ShardReader {
 public:
  static absl::StatusOr<std::unique_ptr<ShardReader>> Open(const std::string& path,
                                                           const ShardExpectation& expected = {});
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const { return path_; }
  const std::string& tokenizer_hash() const { return hash_; }
  int vocab_size() const { return vocab_size_; }
  int token_width() const { return width_; }
  int64_t token_count() const { return token_count_; }
  int64_t doc_count() const { return doc_count_; }
  int64_t doc_begin(int64_t doc) const { return static_cast<int64_t>(index_[doc]); }
  int64_t doc_end(int64_t doc) const { return static_cast<int64_t>(index_[doc + 1]); }

  int32_t token(int64_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(tokens_)[i] : static_cast<const int32_t*>(tokens_)[i];
  }
  // Copies tokens [begin, begin + count) as int32.
  void Copy(int64_t begin, int64_t count, int32_t* out) const;
  std::vector<int32_t> Document(int64_t doc) const;

  // Reads every id and checks it is below the vocab size (O(tokens); `loom data inspect` runs it).
  absl::Status Verify() const;

 private:
  ShardReader() = default;
  std::string path_;
  std::string hash_;
  int vocab_size_ = 0;
  int width_ = 0;
  int64_t token_count_ = 0;
  int64_t doc_count_ = 0;
  const void* tokens_ = nullptr;
  const uint64_t* index_ = nullptr;
  void* map_ = nullptr;
  size_t map_size_ = 0;
};

// The shards of one source and split: `dir/shard-*.bin`, in name order.
absl::StatusOr<std::vector<std::unique_ptr<ShardReader>>> OpenShardDir(const std::string& dir,
                                                                       const ShardExpectation& expected = {});

// Writes `docs` into `dir` as shard-00000.bin, shard-00001.bin, ... of at most
// `max_tokens_per_shard` tokens each (a document is never split; one larger than the limit gets a
// shard of its own). Creates `dir`. Returns the number of shards written.
absl::StatusOr<int> WriteShardDir(const std::string& dir, const std::vector<std::vector<int32_t>>& docs,
                                  const std::string& tokenizer_hash, int vocab_size,
                                  int64_t max_tokens_per_shard = int64_t{1} << 28);

}  // namespace loom::data
