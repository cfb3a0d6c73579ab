#include "common/confined_read.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

std::mutex roots_mutex;
std::vector<std::string>& Roots() {
  static auto* roots = new std::vector<std::string>();
  return *roots;
}

// What the kernel says descriptor `fd` refers to.
absl::StatusOr<std::string> OpenedPath(int fd) {
  const std::string link = absl::StrCat("/proc/self/fd/", fd);
  std::string target(4096, '\0');
  const ssize_t n = ::readlink(link.c_str(), target.data(), target.size());
  if (n < 0 || static_cast<size_t>(n) >= target.size()) {
    return absl::InternalError(absl::StrCat("cannot tell which file ", link,
                                            " is (is /proc mounted?), so it cannot be checked against the "
                                            "read roots"));
  }
  target.resize(static_cast<size_t>(n));
  return target;
}

}  // namespace

std::string ResolvedPath(const std::string& path) {
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? fs::absolute(path).lexically_normal().string() : resolved.string();
}

bool IsInsideRoot(const std::string& path, const std::string& root) {
  const fs::path p(path), r(root);
  auto at = p.begin();
  for (auto part = r.begin(); part != r.end(); ++part, ++at) {
    if (part->empty()) continue;  // a trailing separator
    if (at == p.end() || *at != *part) return false;
  }
  return true;
}

ConfinedFile::~ConfinedFile() {
  if (fd_ >= 0) ::close(fd_);
}

ConfinedFile::ConfinedFile(ConfinedFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

ConfinedFile& ConfinedFile::operator=(ConfinedFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

int ConfinedFile::Release() { return std::exchange(fd_, -1); }

void SetProcessReadRoots(const std::vector<std::string>& roots) {
  std::vector<std::string> resolved;
  for (const std::string& root : roots) {
    if (!root.empty()) resolved.push_back(ResolvedPath(root));
  }
  std::lock_guard<std::mutex> lock(roots_mutex);
  Roots() = std::move(resolved);
}

std::vector<std::string> ProcessReadRoots() {
  std::lock_guard<std::mutex> lock(roots_mutex);
  return Roots();
}

absl::StatusOr<ConfinedFile> OpenConfined(const std::string& path, const std::vector<std::string>& roots,
                                          bool directory) {
  // Confined, a FIFO must not block the open (O_NONBLOCK, cleared below once the file is known
  // to be a regular file or a directory): a plan must not hang a rank on a pipe in a root.
  const int flags = O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0) | (roots.empty() ? 0 : O_NONBLOCK);
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return ErrnoError(directory ? "cannot open directory" : "cannot open", path);
  ConfinedFile file(fd, path);
  if (roots.empty()) return file;
  struct stat st {};
  if (::fstat(file.fd(), &st) != 0) return ErrnoError("cannot stat", path);
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, " is not a regular file or a directory (a FIFO, socket or device): a rank reads only files"));
  }
  if (::fcntl(file.fd(), F_SETFL, ::fcntl(file.fd(), F_GETFL) & ~O_NONBLOCK) != 0) {
    return ErrnoError("cannot clear O_NONBLOCK on", path);
  }
  absl::StatusOr<std::string> opened = OpenedPath(file.fd());
  if (!opened.ok()) return opened.status();
  for (const std::string& root : roots) {
    if (IsInsideRoot(*opened, root)) return file;
  }
  return absl::PermissionDeniedError(absl::StrCat(
      path, *opened == path ? "" : absl::StrCat(" (which is ", *opened, ")"), " is outside the read roots (",
      absl::StrJoin(roots, ", "),
      "): a rank reads only files under the coordinator's allowed roots; a symlink there that leads out is "
      "refused (replace it with the file, or start loom-coordinator with --allowed-roots naming its "
      "directory)"));
}

absl::StatusOr<ConfinedFile> OpenConfined(const std::string& path, bool directory) {
  return OpenConfined(path, ProcessReadRoots(), directory);
}

absl::StatusOr<std::string> ReadAll(const ConfinedFile& file) { return ReadDescriptor(file.fd(), file.path()); }

absl::StatusOr<std::string> ReadConfinedFile(const std::string& path) {
  absl::StatusOr<ConfinedFile> file = OpenConfined(path);
  if (!file.ok()) return file.status();
  return ReadAll(*file);
}

absl::StatusOr<std::vector<std::string>> ListConfinedDirectory(const std::string& dir) {
  absl::StatusOr<ConfinedFile> opened = OpenConfined(dir, /*directory=*/true);
  if (!opened.ok()) return opened.status();
  // fdopendir owns the descriptor from here on; closedir closes it.
  std::unique_ptr<DIR, int (*)(DIR*)> stream(::fdopendir(opened->fd()), &::closedir);
  if (stream == nullptr) return ErrnoError("cannot list directory", dir);
  opened->Release();
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(stream.get())) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
    errno = 0;
  }
  if (errno != 0) return ErrnoError("cannot list directory", dir);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace loom
