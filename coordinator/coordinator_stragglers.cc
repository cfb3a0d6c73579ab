// Straggler half of Coordinator: every rank's compute time per step goes to its attempt's
// detector (straggler.h); the verdict is kept in JobStatus.stragglers (shown by `loom status`,
// exported as loom_rank_straggler) and each change is logged.
#include <algorithm>

#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "coordinator/coordinator.h"

namespace loom::coordinator {
namespace {

constexpr char kLog[] = "coordinator";

}  // namespace

void Coordinator::WatchStragglers(loom::v1::PlanRecord& plan, int index, const loom::v1::Progress& p) {
  loom::v1::JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  StragglerDetector& detector = stragglers_[job->job_id()];
  const int64_t now = clock_();
  if (!detector.Record(p.rank().rank(), p.step(), p.step_compute_seconds(), now)) return;
  const std::vector<StragglerDetector::Verdict> verdicts = detector.Evaluate(now);

  std::map<int, const loom::v1::Straggler*> before;
  for (const loom::v1::Straggler& s : job->stragglers()) before[s.rank()] = &s;
  std::map<int, std::string> workers;
  for (const auto& r : plan.runtime(index).ranks()) workers[r.rank()] = r.worker_id();
  const int window = detector.settings().window_steps;
  google::protobuf::RepeatedPtrField<loom::v1::Straggler> now_flagged;
  for (const StragglerDetector::Verdict& v : verdicts) {
    loom::v1::Straggler& s = *now_flagged.Add();
    s.set_rank(v.rank);
    s.set_worker_id(workers[v.rank]);
    s.set_compute_seconds(v.compute_seconds);
    s.set_peers_compute_seconds(v.peers_compute_seconds);
    s.set_window_steps(window);
    if (!before.contains(v.rank)) {
      Log(LogLevel::kWarning, kLog,
          absl::StrFormat("job %s attempt %d: rank %d on worker %s is a straggler: %.3f s of compute per step "
                          "against its peers' %.3f s (x%.2f, medians over the last %d steps)",
                          job->job_id(), job->attempt(), v.rank, s.worker_id(), v.compute_seconds,
                          v.peers_compute_seconds, v.compute_seconds / std::max(v.peers_compute_seconds, 1e-9),
                          window));
    }
  }
  for (const auto& [rank, s] : before) {
    const bool still = std::any_of(verdicts.begin(), verdicts.end(), [rank = rank](const auto& v) { return v.rank == rank; });
    if (!still) {
      Log(LogLevel::kInfo, kLog,
          absl::StrFormat("job %s attempt %d: rank %d on worker %s is no longer a straggler", job->job_id(),
                          job->attempt(), rank, s->worker_id()));
    }
  }
  *job->mutable_stragglers() = std::move(now_flagged);
}

void Coordinator::ForgetStragglers(loom::v1::PlanRecord& plan, int index) {
  loom::v1::JobStatus* job = plan.mutable_status()->mutable_jobs(index);
  stragglers_.erase(job->job_id());
  job->clear_stragglers();
}

}  // namespace loom::coordinator
