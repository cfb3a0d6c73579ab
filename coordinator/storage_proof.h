// The shared-storage proof. Every worker host must see the coordinator's checkpoint root at the
// same path (ranks write checkpoints there and later stages read them, on whichever host they
// run). The coordinator keeps a random token in a file under the root; a worker reads that file
// and sends its contents when it registers, and is refused when it cannot (coordinator.h).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace loom::coordinator {

// <checkpoint_root>/.loom-storage-token
std::string StorageTokenPath(const std::string& checkpoint_root);

// The token under `checkpoint_root`, written (durably, mode 0644) with 32 random hex digits when
// absent or malformed. An error names the path when it cannot be read or written.
absl::StatusOr<std::string> EnsureStorageToken(const std::string& checkpoint_root);

}  // namespace loom::coordinator
