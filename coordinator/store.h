// The coordinator's durable state in RocksDB. Every state change is one synced WriteBatch, so a
// coordinator killed at any moment restarts with everything it ever acknowledged. Key layout in
// proto/loom/v1/coordinator_store.proto.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "loom/v1/coordinator.pb.h"
#include "loom/v1/coordinator_store.pb.h"

namespace rocksdb {
class DB;
}

namespace loom::coordinator {

// One atomic change: records to write together.
struct StoreWrite {
  std::vector<const loom::v1::PlanRecord*> plans;
  std::vector<const loom::v1::CheckpointInfo*> checkpoints;
  std::vector<const loom::v1::WorkerStatus*> workers;
  // Committed checkpoints to forget (retention deleted them).
  std::vector<const loom::v1::CheckpointInfo*> deleted_checkpoints;
  // Plans to forget whole (they expired, --plan-retention): each one's plan/<id> record and every
  // ckpt/<id>/... record. Applied before the writes above.
  std::vector<std::string> deleted_plans;
  // When >= 0, the new value of the plan sequence counter.
  int64_t plan_seq = -1;
};

// Everything a coordinator loads at start.
struct StoreContents {
  std::vector<loom::v1::PlanRecord> plans;            // by seq
  std::vector<loom::v1::CheckpointInfo> checkpoints;  // by plan, stage, step
  std::vector<loom::v1::WorkerStatus> workers;
  int64_t plan_seq = 0;
};

class Store {
 public:
  // Opens (creating if needed) the database in `dir`. FAILED_PRECONDITION names the directory
  // when another process holds it.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& dir);
  ~Store();

  // Writes every record of `write` in one synced batch.
  absl::Status Write(const StoreWrite& write);
  absl::StatusOr<StoreContents> Load();

  // Records that a room keeps under a key prefix of its own (run_history.h: "hist/"), outside
  // the state Load returns. Not synced unless `sync`: the write-ahead log still survives a killed
  // process, only a machine crash may lose the latest unsynced writes.
  struct RawWrite {
    std::vector<std::pair<std::string, std::string>> puts;
    std::vector<std::string> deletes;
    // Every key starting with one of these is deleted.
    std::vector<std::string> delete_prefixes;
    bool sync = false;
  };
  absl::Status WriteRaw(const RawWrite& write);
  // Calls `visit(key, value)` for each key that starts with `prefix`, in key order, until it
  // returns false.
  absl::Status Scan(const std::string& prefix,
                    const std::function<bool(std::string_view key, std::string_view value)>& visit);
  // Keys under these prefixes are not the coordinator's state: Load skips them.
  static constexpr char kHistoryPrefix[] = "hist/";

  // Keys, exposed for tests and tools.
  static std::string PlanKey(const std::string& plan_id);
  static std::string CheckpointKey(const std::string& plan_id, const std::string& stage, int64_t step);
  static std::string WorkerKey(const std::string& worker_id);

 private:
  explicit Store(rocksdb::DB* db);
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace loom::coordinator
