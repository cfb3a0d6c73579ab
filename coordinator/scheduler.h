// Gang placement: which jobs start now and on which worker slots. Pure logic over a snapshot of
// free slots, so it is tested without processes or clocks.
//
// A job needs dp x tp x pp ranks at once. rank = (dp_rank * pp + pp_rank) * tp + tp_rank, so
// the tp ranks of one tensor-parallel group are consecutive; each group is placed on a single
// worker (one worker daemon per host), best fit (the worker with the fewest free slots that
// still holds the group), which packs jobs and leaves large holes for large groups.
//
// Order: jobs arrive sorted by priority (high first) and then submission (FIFO). A job that does
// not fit blocks the jobs behind it (no backfill, so a large job is not starved), unless it can
// never fit on the workers that exist; then it waits with that reason and does not block.
#pragma once

#include <string>
#include <vector>

namespace loom::coordinator {

struct FreeWorker {
  std::string worker_id;
  // Device indexes of the worker's free slots, ascending.
  std::vector<int> free_devices;
  // All slots of the worker, free or not.
  int total_slots = 0;
};

struct JobRequest {
  std::string job_id;
  int dp = 1;
  int tp = 1;
  int pp = 1;
  // May run with fewer data-parallel ranks (a divisor of dp, the largest that fits) when the full
  // layout does not fit now: the stage's `elastic` after a failed attempt or once the live workers
  // are too few for the full layout. The global batch stays
  // (each rank accumulates more micro-batches), so the training is the same.
  bool elastic = false;
  int world_size() const { return dp * tp * pp; }
};

struct RankSlot {
  std::string worker_id;
  int device_index = 0;
};

struct ScheduleDecision {
  std::string job_id;
  bool placed = false;
  // When placed: one slot per rank, indexed by rank, and the data-parallel size placed (less than
  // the request's only for an elastic job).
  std::vector<RankSlot> ranks;
  int dp = 0;
  // When not placed: why, for JobStatus.reason.
  std::string reason;
};

// Decides for every job of `jobs` (in priority/FIFO order). `workers` are the live workers.
std::vector<ScheduleDecision> Schedule(const std::vector<JobRequest>& jobs, std::vector<FreeWorker> workers);

}  // namespace loom::coordinator
