// The worker's /metrics: the training gauges of the ranks it runs, mirrored from the ranks'
// Progress reports, and checkpoint save times.
//
// Job-global values (loss, lr, grad norm, tokens, tokens/s, MFU, seq len, batch tokens, mix weights,
// per-source tokens, eval results, train measures, step) are the same on every rank, so only
// global rank 0 exports them, labelled {plan, stage} without `rank`: sum() over a job counts each
// token once. Per-rank timings of the latest step (compute, waiting in collectives, waiting for
// data) are exported by every rank with a `rank` label (the job's global rank), and rank 0 feeds
// the job's step-time histogram. Checkpoint save times go to one histogram per job ({plan, stage}),
// fed by each of its ranks here. When a rank exits, every series it exported is removed (the
// checkpoint histogram with the job's last rank on this worker), so finished jobs leave none.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "loom/v1/coordinator.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace loom::worker {

// The metric a training measure ("dpo/accuracy", "rl/kl", ... : StepReport::metrics) is exported
// as, with its unit in the name ("loom_train_dpo_accuracy_ratio"), and its help text. A measure
// Loom does not know becomes loom_train_<measure> with every character outside [a-zA-Z0-9_] as '_'.
struct MeasureMetric {
  std::string name;
  std::string help;
};
MeasureMetric TrainMeasureMetric(const std::string& measure);

class WorkerMetrics {
 public:
  WorkerMetrics();
  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }
  // `plan_id` and `stage` come from the rank's assignment.
  void OnProgress(const std::string& plan_id, const std::string& stage, const loom::v1::Progress& p);
  void OnCheckpoint(const std::string& plan_id, const std::string& stage,
                    const loom::v1::CheckpointReport& report);
  // The measured (or --peak-flops) peak FLOP/s of one slot: loom_worker_peak_flops.
  void SetPeakFlops(double flops_per_second);
  // Counts the exit and removes the series of that rank (for rank 0: the job's global series).
  void OnRankExit(const loom::v1::RankExit& exit);
  void SetRunning(int ranks);

 private:
  absl::Mutex mu_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Gauge>& tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& learning_rate_;
  prometheus::Family<prometheus::Gauge>& grad_norm_;
  prometheus::Family<prometheus::Gauge>& global_batch_;
  prometheus::Family<prometheus::Gauge>& seq_len_;
  prometheus::Family<prometheus::Gauge>& mix_weight_;
  prometheus::Family<prometheus::Counter>& data_tokens_;
  prometheus::Family<prometheus::Gauge>& eval_loss_;
  // One gauge family per training measure (loom_train_dpo_accuracy_ratio, ...), made when a
  // measure is first reported: TrainMeasureMetric names them.
  prometheus::Family<prometheus::Gauge>& TrainMeasure(const std::string& measure) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> train_measures_ ABSL_GUARDED_BY(mu_);
  prometheus::Family<prometheus::Gauge>& eval_accuracy_;
  prometheus::Family<prometheus::Gauge>& step_;
  prometheus::Family<prometheus::Gauge>& rank_compute_;
  prometheus::Family<prometheus::Gauge>& rank_communication_wait_;
  prometheus::Family<prometheus::Gauge>& rank_data_wait_;
  prometheus::Family<prometheus::Histogram>& step_duration_;
  prometheus::Family<prometheus::Gauge>& mfu_;
  prometheus::Family<prometheus::Histogram>& checkpoint_save_;
  prometheus::Gauge& peak_flops_;
  prometheus::Family<prometheus::Counter>& rank_exits_;
  prometheus::Gauge& running_;
  // Series one exporting rank made, to remove when it exits.
  struct Exported {
    std::vector<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>> gauges;
    std::vector<std::pair<prometheus::Family<prometheus::Counter>*, prometheus::Counter*>> counters;
    prometheus::Histogram* step_duration = nullptr;
    // The job's checkpoint save histogram (shared by its ranks on this worker).
    prometheus::Histogram* checkpoint_save = nullptr;
  };
  // Key: "<job_id>/<rank>" of the rank that made the series.
  std::map<std::string, Exported> exported_ ABSL_GUARDED_BY(mu_);
  // Tokens already shown, by "<job_id>/<rank>[/source]"; cleared with the rank's series.
  std::map<std::string, int64_t> tokens_seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::worker
