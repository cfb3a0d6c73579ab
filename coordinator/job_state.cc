#include "coordinator/job_state.h"

#include "absl/strings/str_cat.h"
#include "common/proto_names.h"

namespace loom::coordinator {

using loom::v1::JobState;

bool IsTerminal(JobState state) {
  return state == loom::v1::JOB_STATE_SUCCEEDED || state == loom::v1::JOB_STATE_FAILED ||
         state == loom::v1::JOB_STATE_CANCELLED;
}

bool HasAttemptPlaced(JobState state) {
  return state == loom::v1::JOB_STATE_SCHEDULED || state == loom::v1::JOB_STATE_RUNNING;
}

bool CanTransition(JobState from, JobState to) {
  using namespace loom::v1;
  if (IsTerminal(from) || from == to) return false;
  switch (to) {
    case JOB_STATE_SCHEDULED:
      return from == JOB_STATE_PENDING || from == JOB_STATE_RECOVERING;
    case JOB_STATE_RUNNING:
      return from == JOB_STATE_SCHEDULED;
    case JOB_STATE_RECOVERING:
      return from == JOB_STATE_SCHEDULED || from == JOB_STATE_RUNNING;
    case JOB_STATE_SUCCEEDED:
      // A short attempt may finish before every rank reported progress; a recovering job whose
      // final checkpoint is committed has nothing left to do.
      return from == JOB_STATE_SCHEDULED || from == JOB_STATE_RUNNING || from == JOB_STATE_RECOVERING;
    case JOB_STATE_FAILED:
    case JOB_STATE_CANCELLED:
      return true;
    default:
      return false;
  }
}

absl::Status Transition(loom::v1::JobStatus* job, JobState to, const std::string& reason, int64_t now_ms) {
  const JobState from = job->state();
  if (!CanTransition(from, to)) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job->job_id(), ": no transition ", EnumName(from), " -> ", EnumName(to)));
  }
  loom::v1::JobTransition* t = job->add_transitions();
  t->set_time_ms(now_ms);
  t->set_from_state(from);
  t->set_to_state(to);
  t->set_attempt(job->attempt());
  t->set_reason(reason);
  job->set_state(to);
  job->set_reason(reason);
  return absl::OkStatus();
}

loom::v1::PlanState DerivePlanState(const loom::v1::PlanStatus& plan) {
  bool failed = false, cancelled = false;
  for (const loom::v1::JobStatus& job : plan.jobs()) {
    if (!IsTerminal(job.state())) return loom::v1::PLAN_STATE_ACTIVE;
    failed |= job.state() == loom::v1::JOB_STATE_FAILED;
    cancelled |= job.state() == loom::v1::JOB_STATE_CANCELLED;
  }
  if (failed) return loom::v1::PLAN_STATE_FAILED;
  if (cancelled) return loom::v1::PLAN_STATE_CANCELLED;
  return loom::v1::PLAN_STATE_SUCCEEDED;
}

}  // namespace loom::coordinator
