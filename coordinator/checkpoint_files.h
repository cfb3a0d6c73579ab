// The coordinator's side of checkpoint directories: which paths an attempt may commit, and the
// deletions retention makes. Ranks write checkpoints and never delete them; the coordinator, which
// alone knows what is committed and what later stages still need, deletes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace loom::coordinator {

// True when `path`, lexically normalized, is `dir` or lies under it, and neither has a ".."
// component left: a report's path is untrusted.
bool IsInside(const std::string& path, const std::string& dir);

// Removes the directory tree at `path` (nothing when it does not exist).
absl::Status RemoveTree(const std::string& path);

// In `stage_dir`, removes each `attempt-*` directory's entries that are not (and do not contain)
// one of `keep`, and the attempt directories left empty. Files beside the attempt directories
// (caches shared by the stage's attempts) stay.
absl::Status SweepAttempts(const std::string& stage_dir, const std::vector<std::string>& keep);

}  // namespace loom::coordinator
