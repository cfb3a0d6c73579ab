// Collective communication among the ranks of one process group (a data-parallel group, a
// tensor-parallel group, ...). One interface, several backends: a trivial one for a single
// process, Gloo over TCP for CPU tensors, NCCL for GPU tensors (kernels/cuda builds).
//
// Every call blocks until done, and fails instead of hanging: a lost peer surfaces as an error
// (connection closed) or as DEADLINE_EXCEEDED after the group's timeout, and Abort() makes pending
// and later calls fail at once so a rank being torn down never waits on a dead collective.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/parallel/key_value_store.h"

namespace loom::engine {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: every rank ends with the element-wise sum over ranks.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  virtual absl::Status AllReduceSum(double* data, int64_t count) = 0;
  // In place: every rank ends with `root`'s data.
  virtual absl::Status Broadcast(float* data, int64_t count, int root) = 0;
  // `out` [size * count] receives every rank's `in` [count], in rank order.
  virtual absl::Status AllGather(const float* in, int64_t count, float* out) = 0;
  // Rank r's `out` [count] receives the element-wise sum over ranks of their `in` chunk r
  // (`in` is [size * count], chunk r at r * count). ZeRO-1's gradient step: each rank gets the
  // summed gradients of the parameters whose optimizer state it owns, with half the traffic of an
  // all-reduce (a ring: size - 1 steps of one chunk each way).
  virtual absl::Status ReduceScatterSum(const float* in, int64_t count, float* out) = 0;
  // Point to point (pipeline stages' activations and gradients). A Send to `peer` with `tag`
  // pairs with the Recv on `peer` from this rank with the same tag and count; both block until the
  // data has moved (or the group's timeout passes). Tags are the caller's: e.g. the micro-batch.
  virtual absl::Status Send(const float* data, int64_t count, int peer, uint32_t tag) = 0;
  virtual absl::Status Recv(float* data, int64_t count, int peer, uint32_t tag) = 0;
  // A Send and a Recv posted together and then both awaited: two neighbours that exchange in
  // opposite directions at once (a pipeline's steady state: activations forward, gradients back)
  // would deadlock doing a blocking Send each first.
  virtual absl::Status SendRecv(const float* send, int64_t send_count, int send_peer, uint32_t send_tag,
                                float* recv, int64_t recv_count, int recv_peer, uint32_t recv_tag) = 0;
  virtual absl::Status Barrier() = 0;

  // Makes every later call fail with ABORTED (pending ones fail at their timeout).
  virtual void Abort() = 0;
  // How the group moves data, for logs: "tcp", "shared memory all-reduce, tcp otherwise", ...
  virtual std::string transport() const { return "local"; }
};

// A group of one: collectives are no-ops (AllGather copies).
std::unique_ptr<Communicator> NewSingleProcessCommunicator();

struct GlooOptions {
  int rank = 0;
  int size = 1;
  // Keys of this group in the store, e.g. "<job>#<attempt>/dp0".
  std::string prefix;
  // Address this rank listens on and its peers dial (its host's advertised address); loopback
  // when every rank runs on one machine.
  std::string host = "127.0.0.1";
  // Longest any one collective (and the rendezvous) may take.
  absl::Duration timeout = absl::Seconds(30);
  // Float all-reduces through shared memory when every rank of the group runs on this host
  // (shared_memory_reduce.h); off: always TCP.
  bool shared_memory = true;
};

// Connects the full mesh of `options.size` ranks through `store` (which must outlive the call).
absl::StatusOr<std::unique_ptr<Communicator>> NewGlooCommunicator(KeyValueStore* store,
                                                                  const GlooOptions& options);

}  // namespace loom::engine
