// The process groups of one rank: where it stands in its job's dp × tp × pp layout, and the
// data-, tensor- and pipeline-parallel communicators it joins through the attempt's rendezvous
// store (Gloo over TCP, with shared memory among the ranks of one host).
//
// Ranks are ordered (dp_rank, pp_rank, tp_rank), tp innermost (Megatron's order): a tensor group is
// consecutive ranks, a pipeline strides by tp, a data-parallel group by tp · pp.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/parallel/key_value_store.h"

namespace loom::engine {

// One rank's place in its job's layout (every size at least 1).
struct RankLayout {
  int dp = 1, tp = 1, pp = 1;
  int dp_rank = 0, tp_rank = 0, pp_rank = 0;

  int world_size() const { return dp * tp * pp; }
  int rank() const { return (dp_rank * pp + pp_rank) * tp + tp_rank; }
  bool model_parallel() const { return tp > 1 || pp > 1; }
};

// The groups a rank trains in (not owned; null: a group of one).
struct ParallelGroups {
  Communicator* data = nullptr;
  Communicator* tensor = nullptr;
  Communicator* pipeline = nullptr;
};

// Opens the attempt's rendezvous store; called once, and only when some group has two ranks.
using StoreOpener = std::function<absl::StatusOr<std::unique_ptr<KeyValueStore>>()>;

// Owns one rank's communicators and the store they met through.
class ProcessGroups {
 public:
  ProcessGroups() = default;
  ProcessGroups(ProcessGroups&&) = default;
  ProcessGroups& operator=(ProcessGroups&&) = default;

  // Joins the tensor, then the pipeline, then the data-parallel group of `layout` (each only when
  // it has two ranks or more), listening on `host` (an address of this machine that the peers can
  // reach). Every collective is bounded by `timeout`; a peer that dies fails the group at once.
  // Logs each group's transport: shared memory when all its ranks share this host, else TCP.
  static absl::StatusOr<ProcessGroups> Join(const RankLayout& layout, const StoreOpener& open_store,
                                            absl::Duration timeout, const std::string& host = "127.0.0.1");

  ParallelGroups groups() const { return {data_.get(), tensor_.get(), pipeline_.get()}; }

 private:
  std::unique_ptr<KeyValueStore> store_;  // declared first: outlives the communicators
  std::unique_ptr<Communicator> data_, tensor_, pipeline_;
};

}  // namespace loom::engine
