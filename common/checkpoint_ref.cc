#include "common/checkpoint_ref.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/strings.h"

namespace loom {

bool IsValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok =
        absl::ascii_islower(c) || absl::ascii_isdigit(c) || (i > 0 && (c == '_' || c == '.' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<CheckpointRef> ParseCheckpointRef(std::string_view text) {
  CheckpointRef ref;
  if (text.empty()) return absl::InvalidArgumentError("empty checkpoint reference");
  if (text.find('/') != std::string_view::npos) {
    ref.kind = CheckpointRef::Kind::kPath;
    ref.path = std::string(text);
    return ref;
  }
  std::string_view stage = text;
  if (const size_t at = text.find('@'); at != std::string_view::npos) {
    stage = text.substr(0, at);
    std::string_view step = text.substr(at + 1);
    if (step.substr(0, 5) == "step-") step.remove_prefix(5);
    if (!absl::SimpleAtoi(AbslView(step), &ref.step) || ref.step < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", AbslView(text), "': the part after '@' must be a step number, e.g. core@1200"));
    }
  }
  if (!IsValidName(stage)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", AbslView(text), "' is neither a stage name nor a path (paths contain '/', e.g. ./ckpt)"));
  }
  ref.stage = std::string(stage);
  return ref;
}

}  // namespace loom
