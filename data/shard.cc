#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/confined_read.h"
#include "common/files.h"
#include "common/status_macros.h"

namespace loom::data {
namespace {

// The format is little-endian and Loom reads it by mapping it: big-endian hosts would need a
// byte-swapping reader, which no supported platform needs today.
static_assert(std::endian::native == std::endian::little, "token shards are read in place as little-endian");

constexpr char kMagic[8] = {'L', 'O', 'O', 'M', 'S', 'H', 'R', 'D'};
constexpr int kHashBytes = 64;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t token_width;
  uint32_t vocab_size;
  uint32_t reserved0;
  uint64_t token_count;
  uint64_t doc_count;
  uint64_t index_offset;
  char tokenizer_hash[kHashBytes];
  char reserved1[16];
};
static_assert(sizeof(Header) == kShardHeaderBytes);

uint64_t IndexOffset(uint64_t token_count, int width) {
  const uint64_t end = kShardHeaderBytes + token_count * static_cast<uint64_t>(width);
  return (end + 7) / 8 * 8;
}

absl::Status Corrupt(const std::string& path, std::string_view what) {
  return absl::DataLossError(absl::StrCat("token shard ", path, " is corrupt: ", std::string(what),
                                          " (re-run `loom data prepare`)"));
}

}  // namespace

// ---------------------------------------------------------------- writer

ShardWriter::ShardWriter(std::string path, std::string tmp_path, std::FILE* file, std::string hash, int vocab)
    : path_(std::move(path)),
      tmp_path_(std::move(tmp_path)),
      file_(file),
      hash_(std::move(hash)),
      vocab_size_(vocab),
      width_(vocab <= 65536 ? 2 : 4) {}

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!finished_) ::unlink(tmp_path_.c_str());
}

absl::StatusOr<std::unique_ptr<ShardWriter>> ShardWriter::Create(const std::string& path,
                                                                 const std::string& tokenizer_hash,
                                                                 int vocab_size) {
  if (tokenizer_hash.size() != kHashBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token shard ", path, ": tokenizer hash must be 64 hex digits, got '", tokenizer_hash, "'"));
  }
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("token shard ", path, ": vocab size must be positive"));
  }
  const std::string tmp = path + ".tmp";
  std::FILE* file = std::fopen(tmp.c_str(), "wb");
  if (file == nullptr) {
    return absl::InternalError(absl::StrCat("cannot create token shard ", tmp, ": ", std::strerror(errno)));
  }
  auto writer = std::unique_ptr<ShardWriter>(new ShardWriter(path, tmp, file, tokenizer_hash, vocab_size));
  // The header is written last, once the counts are known; reserve its bytes now.
  const Header blank{};
  if (std::fwrite(&blank, sizeof(blank), 1, file) != 1) {
    return absl::InternalError(absl::StrCat("cannot write token shard ", tmp, ": ", std::strerror(errno)));
  }
  return writer;
}

absl::Status ShardWriter::AddDocument(std::span<const int32_t> tokens) {
  if (finished_) return absl::FailedPreconditionError(absl::StrCat("token shard ", path_, " is finished"));
  for (int32_t id : tokens) {
    if (id < 0 || id >= vocab_size_) {
      return absl::InvalidArgumentError(absl::StrCat("token shard ", path_, ": id ", id,
                                                     " is outside the vocabulary [0, ", vocab_size_, ")"));
    }
  }
  size_t written = 0;  // an empty document writes nothing (fwrite with a null pointer is undefined)
  if (tokens.empty()) {
  } else if (width_ == 2) {
    std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
    written = std::fwrite(narrow.data(), sizeof(uint16_t), narrow.size(), file_);
  } else {
    written = std::fwrite(tokens.data(), sizeof(int32_t), tokens.size(), file_);
  }
  if (written != tokens.size()) {
    return absl::InternalError(
        absl::StrCat("cannot write token shard ", tmp_path_, ": ", std::strerror(errno)));
  }
  index_.push_back(index_.back() + tokens.size());
  return absl::OkStatus();
}

absl::Status ShardWriter::Finish() {
  if (finished_) return absl::OkStatus();
  const uint64_t tokens = index_.back();
  const uint64_t index_offset = IndexOffset(tokens, width_);
  const uint64_t pad = index_offset - (kShardHeaderBytes + tokens * width_);
  const char zeros[8] = {};
  Header header{};
  std::memcpy(header.magic, kMagic, sizeof(kMagic));
  header.version = kShardVersion;
  header.token_width = static_cast<uint32_t>(width_);
  header.vocab_size = static_cast<uint32_t>(vocab_size_);
  header.token_count = tokens;
  header.doc_count = index_.size() - 1;
  header.index_offset = index_offset;
  std::memcpy(header.tokenizer_hash, hash_.data(), kHashBytes);
  bool ok = std::fwrite(zeros, 1, pad, file_) == pad &&
            std::fwrite(index_.data(), sizeof(uint64_t), index_.size(), file_) == index_.size() &&
            std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(&header, sizeof(header), 1, file_) == 1 &&
            std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok)
    return absl::InternalError(
        absl::StrCat("cannot write token shard ", tmp_path_, ": ", std::strerror(errno)));
  LOOM_RETURN_IF_ERROR(RenameDurably(tmp_path_, path_));
  finished_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------- reader

ShardReader::~ShardReader() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<ShardReader>> ShardReader::Open(const std::string& path,
                                                               const ShardExpectation& expected) {
  // Confined to the read roots (a rank's; common/confined_read.h): a shard swapped for a symlink
  // out of them after the plan was accepted is refused here, on the opened file.
  absl::StatusOr<ConfinedFile> opened = OpenConfined(path);
  if (!opened.ok()) {
    return absl::Status(opened.status().code(), absl::StrCat("token shard: ", opened.status().message()));
  }
  const int fd = opened->Release();
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat token shard ", path));
  }
  auto reader = std::unique_ptr<ShardReader>(new ShardReader());
  reader->path_ = path;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < sizeof(Header)) {
    ::close(fd);
    return Corrupt(path, absl::StrCat("file is ", size, " bytes, shorter than the header"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    return absl::InternalError(absl::StrCat("cannot map token shard ", path, ": ", std::strerror(errno)));
  reader->map_ = map;
  reader->map_size_ = size;

  Header header;
  std::memcpy(&header, map, sizeof(header));
  if (std::memcmp(header.magic, kMagic, sizeof(kMagic)) != 0)
    return Corrupt(path, "bad magic (not a Loom token shard)");
  if (header.version != kShardVersion) {
    return absl::FailedPreconditionError(absl::StrCat("token shard ", path, " has format version ",
                                                      header.version, "; this Loom reads version ",
                                                      kShardVersion));
  }
  if (header.token_width != 2 && header.token_width != 4) {
    return Corrupt(path, absl::StrCat("token width ", header.token_width));
  }
  if (header.vocab_size == 0 || header.vocab_size > static_cast<uint32_t>(INT32_MAX)) {
    return Corrupt(path, absl::StrCat("vocab size ", header.vocab_size, " is outside [1, 2^31)"));
  }
  // Counts come from the file: bound each by what the file could hold before any arithmetic, so
  // nothing below can overflow (token_count * width and 8 * (doc_count + 1) stay below `size`).
  if (header.token_count > (size - kShardHeaderBytes) / header.token_width ||
      header.doc_count >= size / 8) {
    return Corrupt(path, absl::StrFormat("%d tokens and %d documents cannot fit in %d bytes",
                                         header.token_count, header.doc_count, size));
  }
  reader->width_ = static_cast<int>(header.token_width);
  reader->vocab_size_ = static_cast<int>(header.vocab_size);
  reader->hash_.assign(header.tokenizer_hash, kHashBytes);
  reader->token_count_ = static_cast<int64_t>(header.token_count);
  reader->doc_count_ = static_cast<int64_t>(header.doc_count);
  if (header.index_offset != IndexOffset(header.token_count, reader->width_) ||
      header.index_offset > size || 8 * (header.doc_count + 1) != size - header.index_offset) {
    return Corrupt(path, absl::StrFormat("size %d does not match %d tokens and %d documents", size,
                                         header.token_count, header.doc_count));
  }
  reader->tokens_ = static_cast<const char*>(map) + kShardHeaderBytes;
  reader->index_ = reinterpret_cast<const uint64_t*>(static_cast<const char*>(map) + header.index_offset);
  if (reader->index_[0] != 0 || reader->index_[reader->doc_count_] != header.token_count) {
    return Corrupt(path, "document index does not span the tokens");
  }
  for (int64_t d = 0; d < reader->doc_count_; ++d) {
    if (reader->index_[d] > reader->index_[d + 1])
      return Corrupt(path, absl::StrCat("document ", d, " ends before it starts"));
  }

  // Every id is checked once here, before any batch can carry it into the embedding or
  // cross-entropy kernels (which index by id without bounds checks). One sequential pass over the
  // mapped tokens: cheap next to training on them.
  LOOM_RETURN_IF_ERROR(reader->Verify());

  if (!expected.tokenizer_hash.empty() && expected.tokenizer_hash != reader->hash_) {
    return absl::FailedPreconditionError(
        absl::StrCat("token shard ", path, " was written with tokenizer ", reader->hash_.substr(0, 12),
                     "..., but the plan's tokenizer is ", expected.tokenizer_hash.substr(0, 12),
                     "...: re-run `loom data prepare` with this tokenizer or point the plan "
                     "at the tokenizer.model the shards were made with"));
  }
  if (expected.vocab_size > 0 && expected.vocab_size != reader->vocab_size_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "token shard ", path, " has vocab size ", reader->vocab_size_, ", but the plan's tokenizer has ",
        expected.vocab_size, ": re-run `loom data prepare` with this tokenizer"));
  }
  return reader;
}

void ShardReader::Copy(int64_t begin, int64_t count, int32_t* out) const {
  if (count <= 0) return;  // `out` may be null for an empty document
  if (width_ == 4) {
    std::memcpy(out, static_cast<const int32_t*>(tokens_) + begin, static_cast<size_t>(count) * 4);
    return;
  }
  const uint16_t* in = static_cast<const uint16_t*>(tokens_) + begin;
  for (int64_t i = 0; i < count; ++i) out[i] = in[i];
}

std::vector<int32_t> ShardReader::Document(int64_t doc) const {
  std::vector<int32_t> out(static_cast<size_t>(doc_end(doc) - doc_begin(doc)));
  Copy(doc_begin(doc), static_cast<int64_t>(out.size()), out.data());
  return out;
}

absl::Status ShardReader::Verify() const {
  for (int64_t i = 0; i < token_count_; ++i) {
    const int32_t id = token(i);
    if (id < 0 || id >= vocab_size_) {
      const int64_t offset = kShardHeaderBytes + i * width_;
      return absl::DataLossError(absl::StrCat(
          "token shard ", path_, ": token ", i, " (byte offset ", offset, ") has id ", id,
          ", outside the vocabulary [0, ", vocab_size_,
          "): re-prepare the data with this tokenizer (`loom data prepare`) and check that "
          "model.vocab_size covers the tokenizer's vocabulary"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::unique_ptr<ShardReader>>> OpenShardDir(const std::string& dir,
                                                                       const ShardExpectation& expected) {
  absl::StatusOr<std::vector<std::string>> names = ListConfinedDirectory(dir);
  if (!names.ok()) {
    if (names.status().code() == absl::StatusCode::kPermissionDenied) return names.status();
    return absl::NotFoundError(absl::StrCat("token shard directory ", dir, ": ", names.status().message(),
                                            " (run `loom data prepare` to make it)"));
  }
  std::vector<std::string> paths;
  for (const std::string& name : *names) {
    if (name.starts_with("shard-") && name.ends_with(".bin")) {
      paths.push_back((std::filesystem::path(dir) / name).string());
    }
  }
  if (paths.empty())
    return absl::NotFoundError(absl::StrCat("token shard directory ", dir, " has no shard-*.bin files"));
  std::sort(paths.begin(), paths.end());
  std::vector<std::unique_ptr<ShardReader>> shards;
  for (const std::string& path : paths) {
    LOOM_ASSIGN_OR_RETURN(auto shard, ShardReader::Open(path, expected));
    shards.push_back(std::move(shard));
  }
  return shards;
}

absl::StatusOr<int> WriteShardDir(const std::string& dir, const std::vector<std::vector<int32_t>>& docs,
                                  const std::string& tokenizer_hash, int vocab_size,
                                  int64_t max_tokens_per_shard) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  int shards = 0;
  std::unique_ptr<ShardWriter> writer;
  auto open_next = [&]() -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(writer, ShardWriter::Create(absl::StrFormat("%s/shard-%05d.bin", dir, shards),
                                                      tokenizer_hash, vocab_size));
    ++shards;
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(open_next());
  for (const std::vector<int32_t>& doc : docs) {
    if (writer->doc_count() > 0 &&
        writer->token_count() + static_cast<int64_t>(doc.size()) > max_tokens_per_shard) {
      LOOM_RETURN_IF_ERROR(writer->Finish());
      LOOM_RETURN_IF_ERROR(open_next());
    }
    LOOM_RETURN_IF_ERROR(writer->AddDocument(doc));
  }
  LOOM_RETURN_IF_ERROR(writer->Finish());
  return shards;
}

}  // namespace loom::data
