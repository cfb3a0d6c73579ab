// Reading plan-named files inside a set of allowed directories ("read roots"), without a
// check-then-open race.
//
// The coordinator refuses, at submit, a plan whose paths resolve outside its allowed roots
// (coordinator/plan_files.h), but ranks read those files later: a symlink inside a root that is
// swapped after submit (data/src -> /etc, model.safetensors -> ~/.ssh/id_ed25519) would pass that
// check. So a rank checks again where it reads: it opens the file first, then asks the kernel
// which file it actually opened (/proc/self/fd/N) and refuses it unless that real path lies inside
// one of the roots, component by component (/srv/data2 is not inside /srv/data). The check is on
// the open descriptor, so nothing can be swapped between the check and the read.
//
// The roots travel in each Assignment (read_roots). loom-rank sets them once at start for the
// whole process (SetProcessReadRoots) because the readers (token shards, tokenizer, JSONL sources,
// checkpoint manifests and safetensors) sit deep under the stage runners; every other process
// (coordinator, CLI, worker daemon) never sets them, and with no roots nothing is confined: these
// functions then read like plain open(2).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace loom {

// An open descriptor that passed the confinement check; closes it when destroyed.
class ConfinedFile {
 public:
  ConfinedFile() = default;
  ConfinedFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~ConfinedFile();
  ConfinedFile(ConfinedFile&& other) noexcept;
  ConfinedFile& operator=(ConfinedFile&& other) noexcept;
  ConfinedFile(const ConfinedFile&) = delete;
  ConfinedFile& operator=(const ConfinedFile&) = delete;

  int fd() const { return fd_; }
  // The path it was opened by (for messages).
  const std::string& path() const { return path_; }
  // Hands the descriptor to the caller, who closes it.
  int Release();

 private:
  int fd_ = -1;
  std::string path_;
};

// `path` made absolute, with `..` and symlinks resolved as far as it exists (the rest lexically):
// how the coordinator resolves its roots and a plan's paths, and how a rank resolves its roots.
std::string ResolvedPath(const std::string& path);
// True when `path` equals `root` or lies below it, component by component (/srv/data2 is not
// inside /srv/data). Both are taken as given: resolve them first.
bool IsInsideRoot(const std::string& path, const std::string& root);

// Sets the read roots of this process (loom-rank, from its Assignment, before the stage runs).
// Each root is resolved (symlinks, `..`) as far as it exists, so that a root reached through a
// symlink on this host still matches the real paths the kernel reports. Empty: no confinement.
void SetProcessReadRoots(const std::vector<std::string>& roots);
// The resolved roots SetProcessReadRoots set; empty when never set.
std::vector<std::string> ProcessReadRoots();

// Opens `path` read-only (a directory with O_DIRECTORY when `directory`) and checks that the file
// it opened lies inside one of `roots` (already resolved). Empty `roots`: no check. Errors:
// ErrnoError's codes when it cannot be opened; PERMISSION_DENIED naming `path`, what it resolved
// to and the roots when it lies outside them (the plan's fault: common/rank_exit.h).
absl::StatusOr<ConfinedFile> OpenConfined(const std::string& path, const std::vector<std::string>& roots,
                                          bool directory = false);
// The same with the process's roots.
absl::StatusOr<ConfinedFile> OpenConfined(const std::string& path, bool directory = false);

// Reads the whole of `path`, confined to the process's roots (like ReadFile otherwise).
absl::StatusOr<std::string> ReadConfinedFile(const std::string& path);
// Reads the rest of an opened file.
absl::StatusOr<std::string> ReadAll(const ConfinedFile& file);

// The names in directory `dir` (not "." and ".."), sorted, with the directory confined to the
// process's roots. The files in it must still be opened with OpenConfined: an entry may be a
// symlink out.
absl::StatusOr<std::vector<std::string>> ListConfinedDirectory(const std::string& dir);

}  // namespace loom
