// A reference to a model checkpoint as written in a plan: `from`, a distillation teacher, a DPO
// reference, average and merge inputs.
//
//   core              the final checkpoint of the stage named "core"
//   core@1200         the checkpoint of stage "core" at optimizer step 1200 (also core@step-1200)
//   /ckpt/x, ./x      a checkpoint directory (anything containing '/')
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom {

struct CheckpointRef {
  enum class Kind { kStage, kPath };
  Kind kind = Kind::kStage;
  std::string stage;  // kStage
  int64_t step = -1;  // kStage: a specific step, or -1 for the stage's final checkpoint
  std::string path;   // kPath
};

absl::StatusOr<CheckpointRef> ParseCheckpointRef(std::string_view text);

// True for names Loom accepts for plans, stages, models and sources:
// [a-z0-9][a-z0-9_.-]*, at most 64 characters.
bool IsValidName(std::string_view name);

}  // namespace loom
