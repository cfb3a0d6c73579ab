// Straggler detection for one attempt of a job: a rank whose own compute time per step stays well
// above its peers' is reported (JobStatus.stragglers, `loom status`, loom_rank_straggler, the
// coordinator's log), so that someone looks at its host before it slows the whole job: every
// synchronous step waits for the slowest rank, which the other ranks see only as communication
// wait.
//
// The comparison: every rank reports its compute seconds per step (Progress.step_compute_seconds:
// forward, backward and optimizer, not the time spent waiting for peers or data). Over the last
// `window_steps` steps, a rank is a straggler when the median of its own compute times is at least
// `ratio` times the median of its peers' medians and exceeds it by at least `min_excess_seconds`
// (a floor, so scheduling noise on millisecond steps flags nobody). Medians make one slow step (a
// checkpoint, a page fault) count for nothing: a rank is flagged only when it is slow in more than
// half of the window, and cleared as soon as it no longer is. A rank is judged only once it has
// reported a full window, and only against peers that have too; with two ranks, "the peers" is the
// other rank. Peers are all the other ranks of the attempt: under pipeline parallelism stages of
// unequal work may differ by design (a documented limit).
//
// Pure logic with the clock passed in; the coordinator keeps one detector per running attempt.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

namespace loom::coordinator {

struct StragglerSettings {
  int window_steps = 20;
  double ratio = 1.3;
  double min_excess_seconds = 0.01;
  // Evaluate at most this often (each rank reports every step; the verdict needs no more).
  int64_t evaluate_every_ms = 1000;
};

class StragglerDetector {
 public:
  struct Verdict {
    int rank = 0;
    double compute_seconds = 0;        // the rank's median over the window
    double peers_compute_seconds = 0;  // the median of the other ranks' medians
    bool operator==(const Verdict&) const = default;
  };

  explicit StragglerDetector(StragglerSettings settings = {}) : settings_(settings) {}

  // Records `rank`'s compute seconds for `step` (a repeated or older step of the rank is ignored).
  // Returns true when an evaluation is due: evaluate_every_ms passed since the last Evaluate.
  bool Record(int rank, int64_t step, double compute_seconds, int64_t now_ms);
  // The ranks that are stragglers now, by rank.
  std::vector<Verdict> Evaluate(int64_t now_ms);

  const StragglerSettings& settings() const { return settings_; }

 private:
  struct Rank {
    int64_t last_step = -1;
    std::deque<double> recent;  // compute seconds of the last window_steps steps
  };
  StragglerSettings settings_;
  std::map<int, Rank> ranks_;
  int64_t last_evaluation_ms_ = -1;
};

}  // namespace loom::coordinator
