#include "worker/engine/parallel/shared_memory_reduce.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

constexpr size_t kLine = 64;  // one counter (and one pid) per cache line

// What must match for two processes to share a segment and see each other's pids: the machine
// (boot id), the /dev/shm mount and the pid namespace.
std::string HostIdentity() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  auto link = [](const char* path) {
    char buf[128] = {};
    const ssize_t n = readlink(path, buf, sizeof(buf) - 1);
    return n > 0 ? std::string(buf, n) : std::string("?");
  };
  return absl::StrCat(host, "/", boot, "/", link("/proc/self/ns/mnt"), "/", link("/proc/self/ns/pid"));
}

size_t SegmentBytes(int size) {
  return 2 * kLine * size + 2 * sizeof(float) * static_cast<size_t>(SharedMemoryReduce::kSlotFloats) * size;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SharedMemoryReduce>> SharedMemoryReduce::Join(KeyValueStore* store,
                                                                              const std::string& prefix, int rank,
                                                                              int size, absl::Duration timeout) {
  const std::string me = HostIdentity();
  LOOM_RETURN_IF_ERROR(store->Set(absl::StrCat(prefix, "/shm/host/", rank), me));
  bool same_host = true;
  for (int r = 0; r < size; ++r) {
    absl::StatusOr<std::string> host = store->Get(absl::StrCat(prefix, "/shm/host/", r), timeout);
    if (!host.ok()) return host.status();
    same_host = same_host && *host == me;
  }
  // Every rank decides the same; rank 0 still publishes a name (empty: no segment) so none waits.
  const size_t bytes = SegmentBytes(size);
  std::string name;
  int fd = -1;
  if (rank == 0) {
    if (same_host) {
      std::random_device random;
      name = absl::StrCat("/loom-", getpid(), "-", random());
      fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
      // posix_fallocate: a full /dev/shm fails here, not with SIGBUS on first touch.
      if (fd >= 0 && posix_fallocate(fd, 0, static_cast<off_t>(bytes)) != 0) {
        close(fd);
        shm_unlink(name.c_str());
        fd = -1;
      }
      if (fd < 0) name.clear();
    }
    LOOM_RETURN_IF_ERROR(store->Set(absl::StrCat(prefix, "/shm/name"), name.empty() ? "-" : name));
  } else {
    LOOM_ASSIGN_OR_RETURN(name, store->Get(absl::StrCat(prefix, "/shm/name"), timeout));
    if (name == "-") name.clear();
    if (!name.empty()) fd = shm_open(name.c_str(), O_RDWR, 0600);
  }
  void* base = MAP_FAILED;
  if (fd >= 0) {
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
  }
  // Whatever happens from here (a peer that never answers included), rank 0 removes the name and
  // a mapping not handed to a SharedMemoryReduce is unmapped: nothing is left in /dev/shm.
  struct Cleanup {
    std::string name;
    void* base;
    size_t bytes;
    ~Cleanup() {
      if (!name.empty()) shm_unlink(name.c_str());
      if (base != MAP_FAILED) munmap(base, bytes);
    }
  } cleanup{rank == 0 ? name : std::string(), base, bytes};
  // Everyone says whether it mapped; rank 0 then removes the name.
  LOOM_RETURN_IF_ERROR(store->Set(absl::StrCat(prefix, "/shm/mapped/", rank), base != MAP_FAILED ? "1" : "0"));
  bool all_mapped = !name.empty();
  for (int r = 0; r < size; ++r) {
    absl::StatusOr<std::string> mapped = store->Get(absl::StrCat(prefix, "/shm/mapped/", r), timeout);
    if (!mapped.ok()) return mapped.status();
    all_mapped = all_mapped && *mapped == "1";
  }
  if (!all_mapped) return std::unique_ptr<SharedMemoryReduce>();
  cleanup.base = MAP_FAILED;  // the SharedMemoryReduce unmaps it
  std::unique_ptr<SharedMemoryReduce> reduce(new SharedMemoryReduce(rank, size, timeout, base, bytes));
  reduce->pid(rank).store(getpid(), std::memory_order_relaxed);
  return reduce;
}

SharedMemoryReduce::SharedMemoryReduce(int rank, int size, absl::Duration timeout, void* base, size_t bytes)
    : rank_(rank), size_(size), timeout_(timeout), base_(base), bytes_(bytes) {}

SharedMemoryReduce::~SharedMemoryReduce() { munmap(base_, bytes_); }

std::atomic<uint64_t>& SharedMemoryReduce::counter(int rank) const {
  return *reinterpret_cast<std::atomic<uint64_t>*>(static_cast<char*>(base_) + kLine * rank);
}
std::atomic<int32_t>& SharedMemoryReduce::pid(int rank) const {
  return *reinterpret_cast<std::atomic<int32_t>*>(static_cast<char*>(base_) + kLine * (size_ + rank));
}
float* SharedMemoryReduce::slot(int set, int rank) const {
  return reinterpret_cast<float*>(static_cast<char*>(base_) + 2 * kLine * size_) + kSlotFloats * (set * size_ + rank);
}

absl::Status SharedMemoryReduce::Arrive(uint64_t value, const std::atomic<bool>& aborted) {
  counter(rank_).store(value, std::memory_order_release);
  const absl::Time deadline = MonotonicNow() + timeout_;
  for (int r = 0; r < size_; ++r) {
    for (int64_t spins = 0; counter(r).load(std::memory_order_acquire) < value; ++spins) {
      if (spins < 1000) continue;  // the peer is about to arrive
      // On a loaded machine one yield or sleep can last milliseconds (4,000 yields took seconds
      // on a 2-core CI machine), so the clock and the abort flag are read after each (a few
      // nanoseconds); only the syscall below is rationed.
      if (spins < 5000) {
        std::this_thread::yield();
      } else {
        // A peer still computing (the all-reduce runs beside the backward pass): sleep, so this
        // thread does not take the cores the computation needs.
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      if (aborted) return absl::AbortedError("shared-memory all-reduce aborted");
      const int32_t peer = spins % 64 == 0 ? pid(r).load(std::memory_order_relaxed) : 0;
      if (peer > 0 && kill(peer, 0) != 0 && errno == ESRCH) {
        return absl::UnavailableError(absl::StrCat("shared-memory all-reduce: rank ", r, " (pid ", peer,
                                                   ") exited"));
      }
      if (MonotonicNow() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("shared-memory all-reduce: timed out after ",
                                                        absl::FormatDuration(timeout_), " waiting for rank ", r));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SharedMemoryReduce::Sum(float* data, int64_t count, const std::atomic<bool>& aborted) {
  for (int64_t offset = 0; offset < count; offset += kSlotFloats) {
    const int64_t n = std::min(kSlotFloats, count - offset);
    auto part = [&](int r) { return std::pair<int64_t, int64_t>{n * r / size_, n * (r + 1) / size_}; };
    // Two sets of slots, alternating by piece: a peer still copying the last piece's sums out of
    // one set has passed this piece's first arrival before anyone writes that set again.
    const int set = static_cast<int>((phase_ / 2) % 2);
    float* piece = data + offset;
    const auto [lo, hi] = part(rank_);
    // 1. My values of the other ranks' parts into my slot.
    float* mine = slot(set, rank_);
    std::memcpy(mine, piece, lo * sizeof(float));
    std::memcpy(mine + hi, piece + hi, (n - hi) * sizeof(float));
    LOOM_RETURN_IF_ERROR(Arrive(++phase_, aborted));
    // 2. My part: the sum over ranks in rank order (one rank computes each part, so every rank
    //    ends with the same floats), into my buffer and my slot.
    //    One pass per rank after the first; the last pass also writes the buffer.
    auto source = [&](int r) -> const float* { return r == rank_ ? piece : slot(set, r); };
    for (int r = 1; r < size_; ++r) {
      const float* a = r == 1 ? source(0) : mine;
      const float* b = source(r);
      if (r + 1 < size_) {
        for (int64_t i = lo; i < hi; ++i) mine[i] = a[i] + b[i];
      } else {
        for (int64_t i = lo; i < hi; ++i) {
          const float sum = a[i] + b[i];
          mine[i] = sum;
          piece[i] = sum;
        }
      }
    }
    LOOM_RETURN_IF_ERROR(Arrive(++phase_, aborted));
    // 3. The other parts' sums from their owners' slots.
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      const auto [a, b] = part(r);
      std::memcpy(piece + a, slot(set, r) + a, (b - a) * sizeof(float));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::engine
