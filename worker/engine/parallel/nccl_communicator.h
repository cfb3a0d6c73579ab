// The NCCL backend of Communicator, for GPU tensors: every pointer passed to its calls is device
// memory on `device`. Built only with CUDA (cmake/LoomCuda.cmake, library loom_engine_nccl).
//
// The ranks meet the way Gloo ranks do, through Loom's KeyValueStore (rank 0 publishes NCCL's
// unique id): no shared filesystem, no MPI. The communicator is non-blocking, so every call polls
// its stream and NCCL's asynchronous error against the timeout and the abort flag, and a lost
// peer fails the call (the communicator is then aborted) instead of hanging the rank.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/parallel/key_value_store.h"

namespace loom::engine {

struct NcclOptions {
  int rank = 0;
  int size = 1;
  // Keys of this group in the store, e.g. "<job>#<attempt>/dp0".
  std::string prefix;
  // The CUDA device this rank's tensors live on (one device per rank: NCCL refuses duplicates).
  int device = 0;
  // Longest the rendezvous or any one call may take.
  absl::Duration timeout = absl::Seconds(30);
};

// Connects `options.size` ranks; fails with the CUDA or NCCL reason (e.g. no device).
absl::StatusOr<std::unique_ptr<Communicator>> NewNcclCommunicator(KeyValueStore* store, const NcclOptions& options);

}  // namespace loom::engine
