// Durable file operations: what "nothing lost on a crash" is built from.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

// Reads a whole file. NOT_FOUND names the file.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `bytes` to `path` (created or truncated) and fsyncs the file before returning.
absl::Status WriteFileDurably(const std::string& path, std::string_view bytes);

// fsyncs a directory, so that the names created or renamed in it are durable too.
absl::Status SyncDirectory(const std::string& dir);

// Renames `from` to `to` atomically (rename(2)) and fsyncs the parent of `to`.
absl::Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace loom
