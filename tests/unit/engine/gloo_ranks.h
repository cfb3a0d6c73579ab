// Test helper: a group of Gloo ranks inside one process. Each rank is a thread with its own Gloo
// context on real TCP over loopback, meeting its peers through a fresh directory store.
#pragma once

#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/unit/data/data_test_util.h"
#include "worker/engine/parallel/communicator.h"

namespace loom::engine::testing {

// Runs `body(group)` on `size` ranks at once and returns each rank's status (a failed rendezvous
// is that rank's status).
inline std::vector<absl::Status> OnGlooRanks(int size, const std::function<absl::Status(Communicator&)>& body,
                                             absl::Duration timeout = absl::Seconds(20),
                                             bool shared_memory = true) {
  data::testing::TempDir dir;
  std::vector<absl::Status> results(size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      std::unique_ptr<KeyValueStore> store = NewDirectoryKeyValueStore(dir.path());
      GlooOptions o;
      o.rank = rank;
      o.size = size;
      o.prefix = "test";
      o.timeout = timeout;
      o.shared_memory = shared_memory;
      auto group = NewGlooCommunicator(store.get(), o);
      results[rank] = group.ok() ? body(**group) : group.status();
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

}  // namespace loom::engine::testing
