// Checkpoint directories (docs/architecture.md): `<root>/<plan>/<stage>/step-<N>/` with
// data files and a manifest.json (loom.v1.CheckpointManifest as JSON) that records the sha256 of
// every file. Written under a temporary name, fsynced, renamed: a crash leaves the old state or
// the whole new checkpoint, never part of one. A manifest whose files do not verify is refused.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/v1/checkpoint.pb.h"

namespace loom {

struct CheckpointFileData {
  std::string name;  // relative to the checkpoint directory, e.g. "model.safetensors"
  std::string role;  // "model" or "optimizer"
  std::string bytes;
};

// Writes `files` and then the manifest (with their digests filled in) into `dir`, atomically;
// an existing `dir` is replaced. Parent directories are created.
absl::Status WriteCheckpointDir(const std::string& dir, const std::vector<CheckpointFileData>& files,
                                loom::v1::CheckpointManifest manifest);

// The file every Loom checkpoint has: the model's weights. A manifest that does not list it is
// refused.
inline constexpr char kCheckpointTensorsFile[] = "model.safetensors";
// The most files a manifest may list.
inline constexpr int kMaxCheckpointFiles = 1024;

// OK when `name` is a manifest file name that stays inside the checkpoint directory: non-empty,
// relative, no `..` component, no NUL, at most 255 bytes.
absl::Status CheckCheckpointFileName(std::string_view name);

// Reads `dir`/manifest.json and checks its file names (CheckCheckpointFileName), their count and
// that it lists kCheckpointTensorsFile (DATA_LOSS naming the file otherwise); with `verify`, checks the size and sha256 of every listed file and
// fails (DATA_LOSS) naming the first file that does not match.
absl::StatusOr<loom::v1::CheckpointManifest> ReadCheckpointManifest(const std::string& dir,
                                                                    bool verify = true);

// "step-000123" for step 123: zero-padded so that names sort by step.
std::string CheckpointDirName(int64_t step);

// Checkpoint directories directly under `stage_dir` that have a manifest, by increasing step
// (not verified; temporary directories of interrupted writes are skipped).
std::vector<std::string> ListCheckpointDirs(const std::string& stage_dir);

}  // namespace loom
