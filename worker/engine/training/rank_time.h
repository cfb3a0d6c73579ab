// Where this rank's time goes, by phase, for the coordinator's goodput ledger: each progress
// report carries the cumulative totals (Progress.rank_time; coordinator/goodput.h charges the
// differences). Process-wide, as a rank runs one stage. Phases nest: time in a phase entered
// inside another counts for the inner one only; time in none (starting, reporting) is in none.
#pragma once

namespace loom::engine {

enum class RankPhase {
  kRendezvous,      // joining the process groups
  kLoad,            // building the model, loading weights or the checkpoint resumed from
  kDataWait,        // waiting for a batch
  kCompute,         // the stage's own work
  kCommunication,   // collectives not hidden behind compute
  kCheckpointSave,  // the blocking part of a save
  kEvaluation,      // evaluations during the stage
};

// Counts the time from construction to destruction for `phase` (RAII; scopes nest).
class RankPhaseScope {
 public:
  explicit RankPhaseScope(RankPhase phase);
  ~RankPhaseScope();
  RankPhaseScope(const RankPhaseScope&) = delete;
  RankPhaseScope& operator=(const RankPhaseScope&) = delete;
};

// Moves `seconds` already counted for `from` to `to`: a wait measured inside a compute scope
// (the gradient all-reduce's exposed time) belongs to communication.
void MoveRankPhaseSeconds(RankPhase from, RankPhase to, double seconds);

// Seconds by phase since the process started.
struct RankTime {
  double rendezvous = 0, load = 0, data_wait = 0, compute = 0, communication = 0, checkpoint_save = 0,
         evaluation = 0;
};
// The totals so far, open scopes counted up to now.
RankTime RankTimeNow();

// Forgets everything (tests).
void ResetRankTime();

}  // namespace loom::engine
