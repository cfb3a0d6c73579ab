#include "coordinator/storage_proof.h"

#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"

namespace loom::coordinator {

std::string StorageTokenPath(const std::string& checkpoint_root) {
  return absl::StrCat(checkpoint_root, "/.loom-storage-token");
}

absl::StatusOr<std::string> EnsureStorageToken(const std::string& checkpoint_root) {
  const std::string path = StorageTokenPath(checkpoint_root);
  if (absl::StatusOr<std::string> existing = ReadFile(path); existing.ok()) {
    const std::string token(absl::StripAsciiWhitespace(*existing));
    if (token.size() == 32) return token;
  }
  std::random_device random;
  std::string token;
  for (int i = 0; i < 4; ++i) token += absl::StrFormat("%08x", random());
  if (absl::Status s = WriteFileDurably(path, token + "\n"); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("cannot write the storage token ", path, ": ", s.message()));
  }
  return token;
}

}  // namespace loom::coordinator
