#include "coordinator/checkpoint_files.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace loom::coordinator {

namespace fs = std::filesystem;

namespace {

bool HasDotDot(const fs::path& p) {
  for (const fs::path& part : p) {
    if (part == "..") return true;
  }
  return false;
}

}  // namespace

bool IsInside(const std::string& path, const std::string& dir) {
  if (path.empty() || dir.empty()) return false;
  const fs::path p = fs::path(path).lexically_normal();
  const fs::path d = fs::path(dir).lexically_normal();
  if (HasDotDot(p) || HasDotDot(d)) return false;
  const fs::path rel = p.lexically_relative(d);
  return !rel.empty() && !HasDotDot(rel) && rel.is_relative();
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot delete ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status SweepAttempts(const std::string& stage_dir, const std::vector<std::string>& keep) {
  std::error_code ec;
  if (!fs::is_directory(stage_dir, ec)) return absl::OkStatus();
  absl::Status result;
  for (const fs::directory_entry& attempt : fs::directory_iterator(stage_dir, ec)) {
    if (!attempt.is_directory() || !absl::StartsWith(attempt.path().filename().string(), "attempt-")) continue;
    std::error_code list_ec;
    for (const fs::directory_entry& entry : fs::directory_iterator(attempt.path(), list_ec)) {
      bool needed = false;
      for (const std::string& k : keep) needed |= IsInside(k, entry.path().string());
      if (!needed) result.Update(RemoveTree(entry.path().string()));
    }
    if (fs::is_empty(attempt.path(), list_ec)) fs::remove(attempt.path(), list_ec);
  }
  if (ec) result.Update(absl::InternalError(absl::StrCat("cannot list ", stage_dir, ": ", ec.message())));
  return result;
}

}  // namespace loom::coordinator
