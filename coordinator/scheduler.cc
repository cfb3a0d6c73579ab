#include "coordinator/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace loom::coordinator {
namespace {

// Places the job on `workers` (consuming their free slots) or returns false and changes nothing.
bool Place(const JobRequest& job, std::vector<FreeWorker>* workers, std::vector<RankSlot>* ranks) {
  std::vector<FreeWorker> trial = *workers;
  ranks->clear();
  const int groups = job.dp * job.pp;
  for (int g = 0; g < groups; ++g) {
    FreeWorker* best = nullptr;
    for (FreeWorker& w : trial) {
      if (static_cast<int>(w.free_devices.size()) < job.tp) continue;
      if (best == nullptr || w.free_devices.size() < best->free_devices.size()) best = &w;
    }
    if (best == nullptr) {
      ranks->clear();
      return false;
    }
    for (int t = 0; t < job.tp; ++t) {
      ranks->push_back({best->worker_id, best->free_devices.front()});
      best->free_devices.erase(best->free_devices.begin());
    }
  }
  *workers = std::move(trial);
  return true;
}

}  // namespace

std::vector<ScheduleDecision> Schedule(const std::vector<JobRequest>& jobs, std::vector<FreeWorker> workers) {
  std::vector<ScheduleDecision> decisions;
  int total_slots = 0;
  int largest_worker = 0;
  for (const FreeWorker& w : workers) {
    total_slots += w.total_slots;
    largest_worker = std::max(largest_worker, w.total_slots);
  }
  std::string blocked_by;  // the first job that fits the cluster but not the free slots now
  for (const JobRequest& job : jobs) {
    ScheduleDecision d;
    d.job_id = job.job_id;
    // The full layout first; an elastic job then tries each smaller divisor of its dp.
    std::vector<int> dps = {job.dp};
    for (int dp = job.dp - 1; job.elastic && dp >= 1; --dp) {
      if (job.dp % dp == 0) dps.push_back(dp);
    }
    bool fits_cluster = false;
    for (int dp : dps) {
      JobRequest shrunk = job;
      shrunk.dp = dp;
      if (shrunk.world_size() > total_slots || shrunk.tp > largest_worker) continue;
      fits_cluster = true;
      if (!blocked_by.empty()) break;
      if (Place(shrunk, &workers, &d.ranks)) {
        d.placed = true;
        d.dp = dp;
        break;
      }
    }
    const int need = job.world_size();
    if (d.placed) {
    } else if (!fits_cluster) {
      d.reason = job.tp > largest_worker
                     ? absl::StrCat("needs a worker with ", job.tp,
                                    " slots for a tensor-parallel group; the largest has ", largest_worker)
                     : absl::StrCat("needs ", need, " slots; the live workers have ", total_slots);
    } else if (!blocked_by.empty()) {
      d.reason = absl::StrCat("queued behind ", blocked_by);
    } else {
      int free = 0, largest_free = 0;
      for (const FreeWorker& w : workers) {
        free += static_cast<int>(w.free_devices.size());
        largest_free = std::max(largest_free, static_cast<int>(w.free_devices.size()));
      }
      d.reason = free < need
                     ? absl::StrCat("waiting for ", need, " free slots (", free, " free)")
                     : absl::StrCat("waiting for workers with ", job.tp,
                                    " free slots per tensor-parallel group (largest has ", largest_free, ")");
      blocked_by = job.job_id;
    }
    decisions.push_back(std::move(d));
  }
  return decisions;
}

}  // namespace loom::coordinator
