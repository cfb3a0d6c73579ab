// Pieces of the chaos harness (chaos_test.cc) that are not the schedule: a mount namespace of the
// test's own, a small disk it can fill, and the distance between two models.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"

namespace loom::testing {

// This process's own mount namespace, made once before any cluster starts: the tmpfs mounted for
// a checkpoint root is seen by this process and its children only, and goes away with them. Test
// hosts cannot be made from inside it (a host's mount namespace cannot be pinned there), so a
// partition seed goes back to the machine's namespace for its run (UseMountNamespace).
struct MountNamespaces {
  int machine = -1;   // the one this process started in
  int isolated = -1;  // its own; -1 when it could not be made
  std::string why_not;  // why not: full-disk faults are then skipped with this reason
};
inline const MountNamespaces& Namespaces() {
  static const MountNamespaces ns = [] {
    MountNamespaces n;
    n.machine = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (unshare(CLONE_NEWNS) != 0) {
      n.why_not = absl::StrCat("full-disk faults skipped: cannot make a private mount namespace (unshare: ",
                               std::strerror(errno), "; needs root)");
      return n;
    }
    if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      n.why_not = absl::StrCat("full-disk faults skipped: cannot make / private in the test's mount namespace (",
                               std::strerror(errno), ")");
      return n;
    }
    n.isolated = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    return n;
  }();
  return ns;
}
inline const std::string& PrivateMountNamespace() { return Namespaces().why_not; }

// Moves this process (one thread: no fault is running) into its own mount namespace or back into
// the machine's; the processes it starts afterwards inherit it.
inline void UseMountNamespace(bool isolated) {
  const MountNamespaces& ns = Namespaces();
  const int fd = isolated ? ns.isolated : ns.machine;
  if (fd < 0) return;
  std::error_code ec;
  const std::filesystem::path cwd = std::filesystem::current_path(ec);
  if (setns(fd, CLONE_NEWNS) != 0) {
    ADD_FAILURE() << "setns to the " << (isolated ? "test's own" : "machine's") << " mount namespace: " << std::strerror(errno);
  }
  std::filesystem::current_path(cwd, ec);  // setns moved it to the namespace's root
}

// A small tmpfs mounted at `path` (the checkpoint root, before the coordinator starts), which a
// ballast file can fill. Unmounted (lazily: ranks may still hold files open) on destruction.
class SmallDisk {
 public:
  // Not mounted, with the reason.
  explicit SmallDisk(std::string why_not) : why_not_(std::move(why_not)) {}
  SmallDisk(const std::string& path, int mib) : path_(path) {
    if (!PrivateMountNamespace().empty()) {
      why_not_ = PrivateMountNamespace();
      return;
    }
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, absl::StrCat("size=", mib, "m,mode=755").c_str()) !=
        0) {
      why_not_ = absl::StrCat("full-disk faults skipped: cannot mount a tmpfs at ", path, " (", std::strerror(errno),
                              ")");
      return;
    }
    mounted_ = true;
  }
  ~SmallDisk() {
    Free();
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
  }
  SmallDisk(const SmallDisk&) = delete;
  SmallDisk& operator=(const SmallDisk&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }

  // Writes a ballast file until the filesystem says ENOSPC, and keeps it full until Free(): the
  // coordinator's retention deletes an older checkpoint after each commit, and without topping up
  // the next save would fit in the room that frees. "" or the error.
  std::string Fill() {
    fd_ = open(Ballast().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return absl::StrCat("open ", Ballast(), ": ", std::strerror(errno));
    // Most of it at once (tmpfs allocates without copying), the rest written.
    if (const uint64_t room = Available(); room > (1 << 20)) {
      (void)fallocate(fd_, 0, 0, static_cast<off_t>(room - (1 << 20)));
      lseek(fd_, 0, SEEK_END);
    }
    if (std::string error = TopUp(); !error.empty()) return error;
    full_ = true;
    keeper_ = std::thread([this] {
      while (full_) {
        (void)TopUp();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    return "";
  }
  // Bytes free (for the log).
  uint64_t Available() const {
    struct statvfs s {};
    return statvfs(path_.c_str(), &s) == 0 ? static_cast<uint64_t>(s.f_bavail) * s.f_frsize : 0;
  }
  void Free() {
    full_ = false;
    if (keeper_.joinable()) keeper_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    std::filesystem::remove(Ballast());
  }

 private:
  std::string Ballast() const { return path_ + "/.chaos-ballast"; }
  // Appends to the ballast until ENOSPC.
  std::string TopUp() {
    static const std::string chunk(1 << 20, '#');
    for (size_t n = chunk.size(); n >= 512;) {
      if (write(fd_, chunk.data(), n) >= 0) continue;
      if (errno != ENOSPC) return absl::StrCat("write ", Ballast(), ": ", std::strerror(errno));
      n /= 2;
    }
    return "";
  }
  std::string path_;
  int fd_ = -1;
  std::atomic<bool> full_ = false;
  std::thread keeper_;
  std::string why_not_;
  bool mounted_ = false;
};

// How far apart two models' weights are: the largest |a - b| of any weight, and the whole
// difference's L2 norm relative to the reference's.
struct ModelDifference {
  std::string error;  // the models could not be compared (a file, a tensor, a shape)
  double max_abs = 0;
  double relative_l2 = 0;
  bool close(double tolerance) const { return error.empty() && relative_l2 <= tolerance; }
  std::string ToString() const {
    return error.empty() ? absl::StrFormat("relative L2 difference %.2g, largest |difference| %.2g", relative_l2, max_abs)
                         : error;
  }
};

inline ModelDifference CompareModels(const std::string& path, const std::string& reference_path) {
  ModelDifference d;
  absl::StatusOr<SafetensorsFile> a = SafetensorsFile::Read(path), b = SafetensorsFile::Read(reference_path);
  if (!a.ok() || !b.ok()) {
    d.error = absl::StrCat("unreadable: ", a.ok() ? b.status().ToString() : a.status().ToString());
    return d;
  }
  if (a->tensors().size() != b->tensors().size()) {
    d.error = absl::StrCat(path, " has ", a->tensors().size(), " tensors, the reference ", b->tensors().size());
    return d;
  }
  double diff2 = 0, ref2 = 0;
  for (const auto& [name, t] : b->tensors()) {
    if (!a->Has(name)) {
      d.error = absl::StrCat(path, " has no tensor ", name);
      return d;
    }
    std::vector<float> x(t.elements()), y(t.elements());
    if (absl::Status s = a->ReadF32(name, t.shape, x.data()); !s.ok()) {
      d.error = s.ToString();
      return d;
    }
    if (absl::Status s = b->ReadF32(name, t.shape, y.data()); !s.ok()) {
      d.error = s.ToString();
      return d;
    }
    for (size_t i = 0; i < x.size(); ++i) {
      const double delta = static_cast<double>(x[i]) - y[i];
      d.max_abs = std::max(d.max_abs, std::abs(delta));
      diff2 += delta * delta;
      ref2 += static_cast<double>(y[i]) * y[i];
    }
  }
  d.relative_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return d;
}

}  // namespace loom::testing
