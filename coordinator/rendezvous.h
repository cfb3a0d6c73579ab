// The rendezvous key-value store: ranks of one attempt publish and wait for each other's
// addresses (Gloo store, NCCL unique id). In memory.
//
// Every attempt has a namespace: its prefix "<job>#<attempt>/" (Assignment.rendezvous_prefix)
// and a random secret the coordinator made when it placed the attempt
// (Assignment.rendezvous_secret). A caller from the network (RendezvousServiceImpl) names its
// attempt and proves it with the secret; it reaches only keys under that attempt's prefix, and
// each attempt is bounded in keys and bytes, so one job cannot starve the others. CloseAttempt
// forgets an attempt's keys and its secret when the attempt ends: a rank of an ended attempt is
// refused from then on.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace loom::coordinator {

// A random rendezvous secret of RendezvousStore::kSecretBytes bytes (OpenSSL's RAND_bytes).
std::string NewRendezvousSecret();

class RendezvousStore {
 public:
  // Limits that keep a broken or hostile client from exhausting memory: per key, per attempt and
  // for the whole store.
  static constexpr size_t kMaxKeyBytes = 1024;
  static constexpr size_t kMaxValueBytes = 1 << 20;
  static constexpr size_t kMaxKeys = 1 << 16;
  static constexpr size_t kMaxKeysPerAttempt = 1 << 14;
  static constexpr size_t kMaxBytesPerAttempt = 64 << 20;  // keys and values together
  static constexpr size_t kSecretBytes = 32;

  // What a network caller presents: the attempt's prefix and its secret.
  struct Credential {
    std::string prefix;
    std::string secret;
  };

  // Opens (or, after a coordinator restart, reopens) the namespace `prefix` with `secret`
  // (kSecretBytes bytes). Keys already under the prefix stay.
  absl::Status OpenAttempt(const std::string& prefix, const std::string& secret);
  // Forgets every key under `prefix` and the secret of every attempt whose prefix starts with it.
  void CloseAttempt(const std::string& prefix);
  bool HasAttempt(const std::string& prefix) const;

  // Calls from the network: PERMISSION_DENIED when the credential names no open attempt, its
  // secret is wrong (compared in constant time), or a key is outside its prefix;
  // RESOURCE_EXHAUSTED when the attempt is over kMaxKeysPerAttempt keys or kMaxBytesPerAttempt.
  absl::Status Set(const Credential& caller, const std::string& key, std::string value);
  absl::StatusOr<std::vector<std::string>> Get(const Credential& caller, const std::vector<std::string>& keys,
                                               absl::Duration wait);
  absl::StatusOr<int64_t> Add(const Credential& caller, const std::string& key, int64_t delta);

  // The coordinator's own calls (the write lease): no credential; a key under an open attempt
  // counts against that attempt's bounds.
  absl::Status Set(const std::string& key, std::string value);
  // Waits up to `wait` for every key; DEADLINE_EXCEEDED names the first missing one.
  absl::StatusOr<std::vector<std::string>> Get(const std::vector<std::string>& keys, absl::Duration wait);
  // Adds `delta` to the decimal integer at `key` (0 when absent); INVALID_ARGUMENT when the value
  // there is not an integer.
  absl::StatusOr<int64_t> Add(const std::string& key, int64_t delta);
  // The same as CloseAttempt.
  void DropPrefix(const std::string& prefix) { CloseAttempt(prefix); }
  size_t size() const;
  // Keys and bytes held under an open attempt's prefix ({0, 0} when it is not open).
  std::pair<size_t, size_t> AttemptUsage(const std::string& prefix) const;

 private:
  struct Attempt {
    std::string secret;
    size_t keys = 0, bytes = 0;
  };
  absl::Status CheckKey(const std::string& key) const;
  absl::Status Authenticate(const Credential& caller, const std::vector<std::string>& keys) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The open attempt whose prefix `key` starts with; null when none.
  Attempt* AttemptOf(const std::string& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Store(const std::string& key, std::string value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<std::string>> Wait(const std::vector<std::string>& keys, absl::Duration wait,
                                                const std::string* prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<int64_t> AddLocked(const std::string& key, int64_t delta) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::string> values_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Attempt> attempts_ ABSL_GUARDED_BY(mu_);  // by prefix
};

}  // namespace loom::coordinator
