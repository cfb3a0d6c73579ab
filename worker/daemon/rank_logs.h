// The logs of the ranks this worker started, served to the coordinator for `loom logs`
// (CoordinatorMessage.read_log -> WorkerMessage.log_chunk). A request names a rank (RankRef),
// never a path: only files this daemon itself opened for its ranks' stdout and stderr can be read,
// at most kMaxLogChunk bytes at a time. Remembers the last kMaxRanks ranks (a daemon that
// restarted knows none of its earlier ones). Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>

#include "absl/synchronization/mutex.h"
#include "loom/v1/coordinator.pb.h"

namespace loom::worker {

class RankLogs {
 public:
  static constexpr int32_t kMaxLogChunk = 256 << 10;
  static constexpr size_t kMaxRanks = 1024;

  // The rank `name` (RankName) writes its output to `path`.
  void Remember(const std::string& name, const std::string& path);
  // Reads the part `request` asks for; LogChunk.error says why nothing was read.
  loom::v1::LogChunk Read(const loom::v1::LogRequest& request);

 private:
  absl::Mutex mu_;
  std::map<std::string, std::string> paths_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> order_ ABSL_GUARDED_BY(mu_);  // oldest first, for eviction
};

}  // namespace loom::worker
