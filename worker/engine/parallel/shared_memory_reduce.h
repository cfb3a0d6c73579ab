// All-reduce through shared memory for the ranks of a group that all run on one machine (a
// worker's slots, the local cluster, tests), the way NCCL's SHM transport avoids the network
// stack: TCP over loopback moves ~2.5 GB/s here, a memory copy ~10 GB/s. The Gloo communicator
// uses it for float all-reduces when every rank of its group is on this host; everything else
// stays on Gloo.
//
// Each rank owns a slot of the segment (two sets, alternating by piece). Per piece of the buffer
// (small enough to stay in cache): every rank copies in its values of the other ranks' parts, sums
// its own 1/n part over the ranks (in rank order; one rank computes each part, so every rank ends
// with the same floats) into its buffer and slot, then copies the other parts' sums out; an
// arrival counter per rank orders the phases. A peer that stops arriving fails the call: at once
// when its process is gone, else after the timeout.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/parallel/key_value_store.h"

namespace loom::engine {

class SharedMemoryReduce {
 public:
  // Meets the other ranks through `store` under `prefix`; rank 0 creates the segment, the others
  // map it, and its name is removed once all have (nothing is left behind after a crash). Returns
  // null, not an error, when the ranks are not all on this host (or /dev/shm has no room).
  static absl::StatusOr<std::unique_ptr<SharedMemoryReduce>> Join(KeyValueStore* store, const std::string& prefix,
                                                                  int rank, int size, absl::Duration timeout);
  ~SharedMemoryReduce();
  SharedMemoryReduce(const SharedMemoryReduce&) = delete;
  SharedMemoryReduce& operator=(const SharedMemoryReduce&) = delete;

  // In place: every rank ends with the element-wise sum over ranks. `aborted` ends the waits.
  absl::Status Sum(float* data, int64_t count, const std::atomic<bool>& aborted);

  // Floats per rank per piece.
  static constexpr int64_t kSlotFloats = int64_t{1} << 17;  // 512 KiB: the pieces stay in cache

 private:
  SharedMemoryReduce(int rank, int size, absl::Duration timeout, void* base, size_t bytes);
  // Publishes this rank's arrival at `value` and waits until every rank has reached it.
  absl::Status Arrive(uint64_t value, const std::atomic<bool>& aborted);
  std::atomic<uint64_t>& counter(int rank) const;
  std::atomic<int32_t>& pid(int rank) const;
  float* slot(int set, int rank) const;

  int rank_, size_;
  absl::Duration timeout_;
  void* base_;
  size_t bytes_;
  uint64_t phase_ = 0;  // arrivals so far (the same on every rank)
};

}  // namespace loom::engine
