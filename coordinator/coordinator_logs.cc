// Coordinator::ReadRankLog: `loom logs` through the coordinator, from the worker that holds the
// rank's log (log_relay.h).
#include "absl/strings/str_cat.h"
#include "coordinator/coordinator.h"

namespace loom::coordinator {

absl::StatusOr<loom::v1::ReadLogResponse> Coordinator::ReadRankLog(const loom::v1::ReadLogRequest& request,
                                                                  absl::Duration timeout) {
  loom::v1::ReadLogResponse response;
  int64_t id = 0;
  {
    absl::MutexLock lock(&mu_);
    auto plan = plans_.find(request.plan_id());
    if (plan == plans_.end()) return NoPlan(request.plan_id());
    const loom::v1::JobStatus* job = nullptr;
    for (const loom::v1::JobStatus& j : plan->second.status().jobs()) {
      if (j.stage() == request.stage()) job = &j;
    }
    if (job == nullptr) {
      return absl::NotFoundError(absl::StrCat("plan '", request.plan_id(), "' has no stage '", request.stage(), "'"));
    }
    // rank_workers lists the current (or, once the job ended, the last) attempt's workers.
    if (job->rank_workers_size() == 0) {
      return absl::NotFoundError(absl::StrCat("job ", job->job_id(), " has not been placed yet: no rank has a log"));
    }
    if (request.rank() < 0 || request.rank() >= job->rank_workers_size()) {
      return absl::NotFoundError(absl::StrCat("job ", job->job_id(), " has ranks 0 to ", job->rank_workers_size() - 1,
                                              ", not ", request.rank()));
    }
    const std::string& worker_id = job->rank_workers(request.rank());
    auto w = workers_.find(worker_id);
    if (w == workers_.end() || w->second.link == nullptr) {
      return absl::UnavailableError(absl::StrCat("worker ", worker_id, ", which holds the log of rank ",
                                                 request.rank(), " of ", job->job_id(), ", is not connected"));
    }
    absl::StatusOr<int64_t> expected = log_relay_.Expect(worker_id);
    if (!expected.ok()) return expected.status();
    id = *expected;
    loom::v1::CoordinatorMessage m;
    loom::v1::LogRequest* r = m.mutable_read_log();
    r->set_request_id(id);
    r->mutable_rank()->set_job_id(job->job_id());
    r->mutable_rank()->set_attempt(job->attempt());
    r->mutable_rank()->set_rank(request.rank());
    r->set_offset(request.offset());
    r->set_max_bytes(request.max_bytes());
    response.set_worker_id(worker_id);
    response.set_attempt(job->attempt());
    const loom::v1::JobState s = job->state();
    response.set_job_ended(s == loom::v1::JOB_STATE_SUCCEEDED || s == loom::v1::JOB_STATE_FAILED ||
                           s == loom::v1::JOB_STATE_CANCELLED);
    Send(worker_id, std::move(m));
  }
  Flush();
  absl::StatusOr<loom::v1::LogChunk> chunk = log_relay_.Wait(id, timeout);
  if (!chunk.ok()) return chunk.status();
  if (!chunk->error().empty()) {
    return absl::NotFoundError(absl::StrCat("worker ", response.worker_id(), ": ", chunk->error()));
  }
  response.set_data(std::move(*chunk->mutable_data()));
  response.set_offset(chunk->offset());
  response.set_size(chunk->size());
  return response;
}

}  // namespace loom::coordinator
