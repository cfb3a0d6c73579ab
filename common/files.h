// Durable file operations: what "nothing lost on a crash" is built from.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

// "<what> <path>: <strerror(errno)>" with the code that says whose fault it is: NOT_FOUND for a
// missing file, PERMISSION_DENIED for a forbidden one (the plan's), DATA_LOSS for EIO and EROFS,
// RESOURCE_EXHAUSTED for a full disk (the node's), INTERNAL otherwise (common/rank_exit.h).
absl::Status ErrnoError(std::string_view what, const std::string& path);

// Reads a whole file. NOT_FOUND names the file.
absl::StatusOr<std::string> ReadFile(const std::string& path);
// Reads the rest of an open descriptor (not closed); `path` names it in errors.
absl::StatusOr<std::string> ReadDescriptor(int fd, const std::string& path);

// Writes `bytes` to `path` (created or truncated) and fsyncs the file before returning.
// `mode`: the permissions of a new file (less the umask).
absl::Status WriteFileDurably(const std::string& path, std::string_view bytes, mode_t mode = 0644);

// fsyncs a directory, so that the names created or renamed in it are durable too.
absl::Status SyncDirectory(const std::string& dir);

// Renames `from` to `to` atomically (rename(2)) and fsyncs the parent of `to`.
absl::Status RenameDurably(const std::string& from, const std::string& to);

}  // namespace loom
