#include "coordinator/store.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace loom::coordinator {
namespace {

constexpr char kPlanPrefix[] = "plan/";
constexpr char kCheckpointPrefix[] = "ckpt/";
constexpr char kWorkerPrefix[] = "worker/";
constexpr char kPlanSeqKey[] = "meta/plan_seq";

// The first key after every key that starts with `prefix` (prefix is non-empty and does not end
// in 0xff, true of Loom's ASCII prefixes).
std::string PrefixEnd(std::string prefix) {
  ++prefix.back();
  return prefix;
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsIOError() && absl::StrContains(s.ToString(), "lock")) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", s.ToString(), " (is another coordinator using it?)"));
  }
  return absl::InternalError(absl::StrCat(what, ": ", s.ToString()));
}

}  // namespace

Store::Store(rocksdb::DB* db) : db_(db) {}
Store::~Store() = default;

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // The state is small; keep RocksDB's footprint small too.
  options.max_open_files = 64;
  options.keep_log_file_num = 4;
  rocksdb::DB* db = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(options, dir, &db);
  if (absl::Status st = FromRocks(s, absl::StrCat("opening the coordinator store ", dir)); !st.ok())
    return st;
  return std::unique_ptr<Store>(new Store(db));
}

std::string Store::PlanKey(const std::string& plan_id) { return absl::StrCat(kPlanPrefix, plan_id); }

std::string Store::CheckpointKey(const std::string& plan_id, const std::string& stage, int64_t step) {
  return absl::StrFormat("%s%s/%s/%020d", kCheckpointPrefix, plan_id, stage, step);
}

std::string Store::WorkerKey(const std::string& worker_id) { return absl::StrCat(kWorkerPrefix, worker_id); }

absl::Status Store::Write(const StoreWrite& write) {
  rocksdb::WriteBatch batch;
  std::string bytes;
  for (const std::string& plan_id : write.deleted_plans) {
    batch.Delete(PlanKey(plan_id));
    const std::string checkpoints = absl::StrCat(kCheckpointPrefix, plan_id, "/");
    batch.DeleteRange(checkpoints, PrefixEnd(checkpoints));
  }
  for (const loom::v1::PlanRecord* plan : write.plans) {
    plan->SerializeToString(&bytes);
    batch.Put(PlanKey(plan->status().plan_id()), bytes);
  }
  // Deletions first: a checkpoint that replaces a deleted one at the same step survives.
  for (const loom::v1::CheckpointInfo* c : write.deleted_checkpoints) {
    batch.Delete(CheckpointKey(c->plan_id(), c->stage(), c->step()));
  }
  for (const loom::v1::CheckpointInfo* c : write.checkpoints) {
    c->SerializeToString(&bytes);
    batch.Put(CheckpointKey(c->plan_id(), c->stage(), c->step()), bytes);
  }
  for (const loom::v1::WorkerStatus* w : write.workers) {
    w->SerializeToString(&bytes);
    batch.Put(WorkerKey(w->worker_id()), bytes);
  }
  if (write.plan_seq >= 0) batch.Put(kPlanSeqKey, absl::StrCat(write.plan_seq));
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, &batch), "writing the coordinator store");
}

absl::Status Store::WriteRaw(const RawWrite& write) {
  rocksdb::WriteBatch batch;
  for (const std::string& prefix : write.delete_prefixes) batch.DeleteRange(prefix, PrefixEnd(prefix));
  for (const std::string& key : write.deletes) batch.Delete(key);
  for (const auto& [key, value] : write.puts) batch.Put(key, value);
  rocksdb::WriteOptions options;
  options.sync = write.sync;
  return FromRocks(db_->Write(options, &batch), "writing the coordinator store");
}

absl::Status Store::Scan(const std::string& prefix,
                         const std::function<bool(std::string_view key, std::string_view value)>& visit) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    if (!visit(std::string_view(it->key().data(), it->key().size()),
               std::string_view(it->value().data(), it->value().size())))
      break;
  }
  return FromRocks(it->status(), "reading the coordinator store");
}

absl::StatusOr<StoreContents> Store::Load() {
  StoreContents contents;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().starts_with(kHistoryPrefix)) {  // run history: read on demand, not at start
      it->Seek(PrefixEnd(kHistoryPrefix));
      if (!it->Valid()) break;
    }
    const std::string key = it->key().ToString();
    const rocksdb::Slice value = it->value();
    bool ok = true;
    if (absl::StartsWith(key, kPlanPrefix)) {
      ok = contents.plans.emplace_back().ParseFromArray(value.data(), static_cast<int>(value.size()));
    } else if (absl::StartsWith(key, kCheckpointPrefix)) {
      ok = contents.checkpoints.emplace_back().ParseFromArray(value.data(), static_cast<int>(value.size()));
    } else if (absl::StartsWith(key, kWorkerPrefix)) {
      ok = contents.workers.emplace_back().ParseFromArray(value.data(), static_cast<int>(value.size()));
    } else if (key == kPlanSeqKey) {
      ok = absl::SimpleAtoi(value.ToString(), &contents.plan_seq);
    }
    if (!ok) return absl::DataLossError(absl::StrCat("coordinator store: record '", key, "' does not parse"));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading the coordinator store");
  std::sort(contents.plans.begin(), contents.plans.end(),
            [](const auto& a, const auto& b) { return a.seq() < b.seq(); });
  return contents;
}

}  // namespace loom::coordinator
