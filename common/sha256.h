// SHA-256 of bytes and files (OpenSSL's EVP), as hex: checkpoint manifests record the digest of
// every shard and refuse to load one that does not match; token shards record their tokenizer's.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom {

// Incremental: Update() any number of times, then HexDigest() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // 64 lower-case hex digits. The object cannot be updated afterwards.
  std::string HexDigest();

 private:
  struct State;
  State* state_;
};

std::string Sha256Hex(std::string_view bytes);

// Streams the file; NOT_FOUND / DATA_LOSS name the file on failure.
absl::StatusOr<std::string> Sha256File(const std::string& path);
// Streams the rest of an open descriptor (not closed); `path` names it in errors.
absl::StatusOr<std::string> Sha256Descriptor(int fd, const std::string& path);

}  // namespace loom
