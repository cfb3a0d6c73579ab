#include "coordinator/run_history.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::coordinator {
namespace {

constexpr char kStrideKey[] = "stride";
constexpr size_t kPointSuffixSize = 20 + 1 + 10;  // <step:020>/<attempt:010>

// This Abseil's string_view is its own type.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A point's key suffix: true when it is one (and not the stride, nor a key of another stage whose
// name begins with this one's followed by '/').
bool IsPointSuffix(std::string_view suffix) {
  if (suffix.size() != kPointSuffixSize || suffix[20] != '/') return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (i != 20 && (suffix[i] < '0' || suffix[i] > '9')) return false;
  }
  return true;
}

// Later wins for the figures a report carries; evaluation results of both are kept.
void Merge(const loom::v1::MetricPoint& later, loom::v1::MetricPoint* point) {
  if (later.tokens() != 0) point->set_tokens(later.tokens());
  if (later.loss() != 0) point->set_loss(later.loss());
  if (later.learning_rate() != 0) point->set_learning_rate(later.learning_rate());
  if (later.grad_norm() != 0) point->set_grad_norm(later.grad_norm());
  if (later.tokens_per_second() != 0) point->set_tokens_per_second(later.tokens_per_second());
  if (later.time_ms() != 0) point->set_time_ms(later.time_ms());
  for (const auto& [k, v] : later.eval_loss()) (*point->mutable_eval_loss())[k] = v;
  for (const auto& [k, v] : later.eval_metrics()) (*point->mutable_eval_metrics())[k] = v;
  for (const auto& [k, v] : later.train_metrics()) (*point->mutable_train_metrics())[k] = v;
}

// Whether `a` was reported after `b`: a later attempt, or a later step of the same attempt.
bool Newer(const loom::v1::MetricPoint& a, const loom::v1::MetricPoint& b) {
  return a.attempt() != b.attempt() ? a.attempt() > b.attempt() : a.step() > b.step();
}

}  // namespace

RunHistory::RunHistory(Store* store, int max_points) : store_(store), max_points_(std::max(2, max_points)) {}

std::string RunHistory::JobPrefix(const std::string& plan_id, const std::string& stage) {
  return absl::StrCat(Store::kHistoryPrefix, plan_id, "/", stage, "/");
}

std::string RunHistory::PointKey(const std::string& prefix, int64_t step, int32_t attempt) {
  return absl::StrFormat("%s%020d/%010d", prefix, std::max<int64_t>(0, step), std::max(0, attempt));
}

absl::StatusOr<RunHistory::Job*> RunHistory::LoadJob(const std::string& prefix) {
  auto it = jobs_.find(prefix);
  if (it != jobs_.end()) return &it->second;
  Job job;
  absl::Status bad;
  absl::Status s = store_->Scan(prefix, [&](std::string_view key, std::string_view value) {
    const std::string_view suffix = key.substr(prefix.size());
    if (suffix == kStrideKey) {
      if (!absl::SimpleAtoi(A(value), &job.stride) || job.stride < 1) {
        bad = absl::DataLossError(absl::StrCat("run history: '", A(key), "' is not a positive number"));
        return false;
      }
      return true;
    }
    if (!IsPointSuffix(suffix)) return true;
    loom::v1::MetricPoint point;
    if (!point.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      bad = absl::DataLossError(absl::StrCat("run history: record '", A(key), "' does not parse"));
      return false;
    }
    ++job.count;
    if (!job.has_last || Newer(point, job.last)) {
      job.last = std::move(point);
      job.has_last = true;
    }
    return true;
  });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  return &jobs_.emplace(prefix, std::move(job)).first->second;
}

absl::Status RunHistory::Record(const std::string& plan_id, const std::string& stage,
                                const loom::v1::Progress& progress) {
  loom::v1::MetricPoint point;
  point.set_stage(stage);
  point.set_attempt(progress.rank().attempt());
  point.set_step(progress.step());
  point.set_tokens(progress.tokens());
  point.set_loss(progress.loss());
  point.set_learning_rate(progress.learning_rate());
  point.set_grad_norm(progress.grad_norm());
  point.set_tokens_per_second(progress.tokens_per_second());
  point.mutable_eval_loss()->insert(progress.eval_loss().begin(), progress.eval_loss().end());
  point.mutable_eval_metrics()->insert(progress.eval_metrics().begin(), progress.eval_metrics().end());
  point.mutable_train_metrics()->insert(progress.train_metrics().begin(), progress.train_metrics().end());
  point.set_time_ms(progress.time_ms());

  const std::string prefix = JobPrefix(plan_id, stage);
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Job*> loaded = LoadJob(prefix);
  if (!loaded.ok()) return loaded.status();
  Job& job = **loaded;
  Store::RawWrite write;
  if (job.has_last && job.last.step() == point.step() && job.last.attempt() == point.attempt()) {
    loom::v1::MetricPoint merged = job.last;
    Merge(point, &merged);
    point = std::move(merged);
  } else {
    ++job.count;
    // The previous newest point was kept only for being the newest.
    if (job.has_last && job.last.step() % job.stride != 0) {
      write.deletes.push_back(PointKey(prefix, job.last.step(), job.last.attempt()));
      --job.count;
    }
  }
  write.puts.emplace_back(PointKey(prefix, point.step(), point.attempt()), point.SerializeAsString());
  job.last = point;
  job.has_last = true;
  if (absl::Status s = store_->WriteRaw(write); !s.ok()) {
    jobs_.erase(prefix);  // read it again from the store next time
    return s;
  }
  if (job.count > max_points_) {
    if (absl::Status s = Thin(prefix, job); !s.ok()) {
      jobs_.erase(prefix);
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status RunHistory::Thin(const std::string& prefix, Job& job) {
  struct Key {
    std::string key;
    int64_t step;
  };
  std::vector<Key> keys;
  absl::Status s = store_->Scan(prefix, [&](std::string_view key, std::string_view) {
    const std::string_view suffix = key.substr(prefix.size());
    if (!IsPointSuffix(suffix)) return true;
    int64_t step = 0;
    if (absl::SimpleAtoi(A(suffix.substr(0, 20)), &step)) keys.push_back({std::string(key), step});
    return true;
  });
  if (!s.ok()) return s;
  const std::string newest = PointKey(prefix, job.last.step(), job.last.attempt());
  Store::RawWrite write;
  int64_t left = static_cast<int64_t>(keys.size());
  // Each doubling halves the points of a run; many attempts at the same steps may need more.
  while (left > max_points_ && job.stride < (int64_t{1} << 40)) {
    job.stride *= 2;
    left = 0;
    write.deletes.clear();
    for (const Key& k : keys) {
      if (k.step % job.stride == 0 || k.key == newest) {
        ++left;
      } else {
        write.deletes.push_back(k.key);
      }
    }
  }
  write.puts.emplace_back(prefix + kStrideKey, absl::StrCat(job.stride));
  job.count = left;
  return store_->WriteRaw(write);
}

absl::StatusOr<std::vector<loom::v1::MetricPoint>> RunHistory::Read(const std::string& plan_id,
                                                                    const std::string& stage) {
  const std::string prefix = JobPrefix(plan_id, stage);
  std::vector<loom::v1::MetricPoint> points;
  absl::Status bad;
  absl::Status s = store_->Scan(prefix, [&](std::string_view key, std::string_view value) {
    if (!IsPointSuffix(key.substr(prefix.size()))) return true;
    if (!points.emplace_back().ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      bad = absl::DataLossError(absl::StrCat("run history: record '", A(key), "' does not parse"));
      return false;
    }
    return true;
  });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  return points;
}

absl::Status RunHistory::ForgetPlan(const std::string& plan_id) {
  const std::string prefix = absl::StrCat(Store::kHistoryPrefix, plan_id, "/");
  {
    absl::MutexLock lock(&mu_);
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      it = it->first.starts_with(prefix) ? jobs_.erase(it) : std::next(it);
    }
  }
  Store::RawWrite write;
  write.delete_prefixes.push_back(prefix);
  write.sync = true;
  return store_->WriteRaw(write);
}

}  // namespace loom::coordinator
