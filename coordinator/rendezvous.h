// The rendezvous key-value store: ranks of one attempt publish and wait for each other's
// addresses (Gloo store, NCCL unique id). In memory; keys carry the attempt's
// rendezvous_prefix, and DropPrefix forgets an attempt's keys when it ends.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace loom::coordinator {

class RendezvousStore {
 public:
  // Limits that keep a broken or hostile client from exhausting memory.
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxKeys = 1 << 16;

  absl::Status Set(const std::string& key, std::string value);
  // Waits up to `wait` for every key; DEADLINE_EXCEEDED names the first missing one.
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys, absl::Duration wait);
  // Adds `delta` to the decimal integer at `key` (0 when absent); INVALID_ARGUMENT when the value
  // there is not an integer.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);
  // Removes every key that starts with `prefix`.
  void DropPrefix(const std::string& prefix);
  size_t size() const;

 private:
  absl::Status CheckKey(const std::string& key) const;
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::coordinator
