// The rendezvous store ranks meet through: a small key-value map shared by the ranks of one job
// attempt. Keys are written once; Get waits until a key exists or the timeout passes.
//
// The engine never speaks gRPC: the worker hands it a store backed by the coordinator's
// rendezvous service; tests and single-host runs use DirectoryKeyValueStore.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace loom::engine {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;
  virtual absl::Status Set(const std::string& key, const std::string& value) = 0;
  // Waits for `key`; DEADLINE_EXCEEDED names it when it does not appear within `timeout`.
  virtual absl::StatusOr<std::string> Get(const std::string& key, absl::Duration timeout) = 0;
};

// One file per key in a directory that every rank sees (written atomically: temp + rename).
// The directory must be fresh for each rendezvous.
std::unique_ptr<KeyValueStore> NewDirectoryKeyValueStore(const std::string& dir);

}  // namespace loom::engine
