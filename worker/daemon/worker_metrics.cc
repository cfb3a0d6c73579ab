#include "worker/daemon/worker_metrics.h"

#include <algorithm>
#include <cctype>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "common/command_line.h"

namespace loom::worker {
namespace {

prometheus::Family<prometheus::Gauge>& Gauge(prometheus::Registry& r, const std::string& name,
                                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r);
}

}  // namespace

WorkerMetrics::WorkerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      loss_(Gauge(*registry_, "loom_train_loss", "Training loss of the latest step")),
      tokens_(prometheus::BuildCounter()
                  .Name("loom_train_tokens_total")
                  .Help("Tokens consumed by the stage (global, all ranks; exported by rank 0 only)")
                  .Register(*registry_)),
      tokens_per_second_(Gauge(*registry_, "loom_train_tokens_per_second", "Training throughput (global)")),
      learning_rate_(Gauge(*registry_, "loom_train_learning_rate", "Learning rate in force")),
      grad_norm_(Gauge(*registry_, "loom_train_grad_norm", "Global gradient norm before clipping")),
      global_batch_(Gauge(*registry_, "loom_train_global_batch_tokens", "Global batch size in tokens")),
      seq_len_(Gauge(*registry_, "loom_train_seq_len", "Sequence length in force")),
      mix_weight_(Gauge(*registry_, "loom_data_mix_weight", "Data mix weight of each source in force")),
      data_tokens_(prometheus::BuildCounter()
                       .Name("loom_data_tokens_total")
                       .Help("Training tokens drawn from each source by the stage (global; exported by rank 0 "
                             "only)")
                       .Register(*registry_)),
      eval_loss_(Gauge(*registry_, "loom_eval_loss",
                       "Held-out loss (nats per token) of the latest evaluation, by set (a source, or "
                       "source@seq_len)")),
      eval_accuracy_(Gauge(*registry_, "loom_eval_accuracy",
                           "Accuracy of the latest evaluation, by set (math: greedy answers the verifier "
                           "accepts)")),
      step_(Gauge(*registry_, "loom_train_step", "Optimizer steps taken by the stage")),
      rank_compute_(Gauge(*registry_, "loom_rank_step_compute_seconds",
                          "Seconds this rank computed in its latest step (forward, backward, optimizer; "
                          "not waiting for peers or data)")),
      rank_communication_wait_(Gauge(*registry_, "loom_rank_step_communication_wait_seconds",
                                     "Seconds this rank waited in collectives in its latest step (gradient "
                                     "reduction the backward did not hide, waiting for slower peers)")),
      rank_data_wait_(Gauge(*registry_, "loom_rank_step_data_wait_seconds",
                            "Seconds this rank waited for its batch from the data source in its latest step")),
      step_duration_(prometheus::BuildHistogram()
                         .Name("loom_train_step_duration_seconds")
                         .Help("Wall time of each optimizer step (global rank 0)")
                         .Register(*registry_)),
      mfu_(Gauge(*registry_, "loom_train_mfu_ratio",
                 "Model FLOPs utilization of the job (global; exported by rank 0 only): tokens/s x model "
                 "FLOPs per token (6 x non-embedding parameters + attention) over the job's slots x "
                 "loom_worker_peak_flops")),
      checkpoint_save_(prometheus::BuildHistogram()
                           .Name("loom_checkpoint_save_seconds")
                           .Help("Seconds a rank of the job spent writing its checkpoint shard")
                           .Register(*registry_)),
      peak_flops_(Gauge(*registry_, "loom_worker_peak_flops",
                        "Peak FLOP/s of one slot of this worker (one rank with --threads-per-rank threads): "
                        "the best of short float32 GEMMs at start-up, or --peak-flops")
                      .Add({})),
      rank_exits_(prometheus::BuildCounter()
                      .Name("loom_worker_rank_exits_total")
                      .Help("Rank processes that ended, by outcome")
                      .Register(*registry_)),
      running_(Gauge(*registry_, "loom_worker_ranks_running", "Rank processes running").Add({})) {
  Gauge(*registry_, "loom_build_info", "1, labelled with the version of Loom this worker runs")
      .Add({{"version", loom::Version()}})
      .Set(1);
}

void WorkerMetrics::OnProgress(const std::string& plan_id, const std::string& stage,
                               const loom::v1::Progress& p) {
  const prometheus::Labels labels = {{"plan", plan_id}, {"stage", stage}};
  const std::string key = absl::StrCat(p.rank().job_id(), "/", p.rank().rank());
  const bool timed = p.step_seconds() > 0;  // a training step's report (not measures alone)
  if (p.rank().rank() != 0 && !timed) return;
  absl::MutexLock lock(&mu_);
  Exported& ex = exported_[key];
  // Family::Add returns the same series for the same labels: keep each pointer once.
  auto dedupe = [](auto& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  auto set = [&ex](prometheus::Family<prometheus::Gauge>& family, const prometheus::Labels& l, double v) {
    prometheus::Gauge& g = family.Add(l);
    g.Set(v);
    ex.gauges.emplace_back(&family, &g);
  };
  // This rank's own timing of the step: the latest step's, not an average (rate() over the
  // histogram, or avg_over_time(), gives averages).
  if (timed) {
    prometheus::Labels l = labels;
    l["rank"] = absl::StrCat(p.rank().rank());
    set(rank_compute_, l, p.step_compute_seconds());
    set(rank_communication_wait_, l, p.step_communication_wait_seconds());
    set(rank_data_wait_, l, p.step_data_wait_seconds());
  }
  // Every value below is job-global (identical on all ranks): only global rank 0 exports it.
  if (p.rank().rank() != 0) {
    dedupe(ex.gauges);
    return;
  }
  if (timed) {
    if (ex.step_duration == nullptr) {
      ex.step_duration = &step_duration_.Add(
          labels, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                                                          60, 120, 300});
    }
    ex.step_duration->Observe(p.step_seconds());
  }
  // A counter only goes up: after a resume from an earlier checkpoint it waits until the stage
  // passes the tokens it had already shown.
  auto add = [&ex](prometheus::Family<prometheus::Counter>& family, const prometheus::Labels& l,
                   int64_t total, int64_t& seen) {
    prometheus::Counter& c = family.Add(l);
    if (total > seen) {
      c.Increment(static_cast<double>(total - seen));
      seen = total;
    }
    ex.counters.emplace_back(&family, &c);
  };
  set(loss_, labels, p.loss());
  set(tokens_per_second_, labels, p.tokens_per_second());
  if (p.model_flops_utilization() > 0) set(mfu_, labels, p.model_flops_utilization());
  set(learning_rate_, labels, p.learning_rate());
  set(grad_norm_, labels, p.grad_norm());
  set(global_batch_, labels, static_cast<double>(p.global_batch_tokens()));
  set(seq_len_, labels, p.seq_len());
  set(step_, labels, static_cast<double>(p.step()));
  add(tokens_, labels, p.tokens(), tokens_seen_[key]);
  for (const auto& [source, weight] : p.mix_weights()) {
    prometheus::Labels l = labels;
    l["source"] = source;
    set(mix_weight_, l, weight);
  }
  for (const auto& [source, drawn] : p.source_tokens()) {
    prometheus::Labels l = labels;
    l["source"] = source;
    add(data_tokens_, l, drawn, tokens_seen_[absl::StrCat(key, "/", source)]);
  }
  for (const auto& [set_name, loss] : p.eval_loss()) {
    prometheus::Labels l = labels;
    l["set"] = set_name;
    set(eval_loss_, l, loss);
  }
  for (const auto& [name, value] : p.train_metrics()) set(TrainMeasure(name), labels, value);
  // eval_metrics keys are "<set>/<measure>"; accuracies become a gauge of their own.
  for (const auto& [metric, value] : p.eval_metrics()) {
    const size_t slash = metric.rfind('/');
    if (slash == std::string::npos || metric.substr(slash + 1) != "accuracy") continue;
    prometheus::Labels l = labels;
    l["set"] = metric.substr(0, slash);
    set(eval_accuracy_, l, value);
  }
  dedupe(ex.gauges);
  dedupe(ex.counters);
}

MeasureMetric TrainMeasureMetric(const std::string& measure) {
  static const auto* known = new std::map<std::string, MeasureMetric>{
      {"dpo/accuracy", {"loom_train_dpo_accuracy_ratio", "DPO: share of the step's pairs whose chosen answer has the higher implicit reward"}},
      {"dpo/margin", {"loom_train_dpo_reward_margin", "DPO: mean implicit reward of chosen minus rejected (beta x log-ratio)"}},
      {"dpo/chosen_reward", {"loom_train_dpo_chosen_reward", "DPO: mean implicit reward of the chosen answers"}},
      {"dpo/rejected_reward", {"loom_train_dpo_rejected_reward", "DPO: mean implicit reward of the rejected answers"}},
      {"rm/accuracy", {"loom_train_reward_model_accuracy_ratio", "Reward model: share of pairs scored in the right order"}},
      {"rm/margin", {"loom_train_reward_model_margin", "Reward model: mean score of chosen minus rejected"}},
      {"online/accuracy", {"loom_train_online_accuracy_ratio", "Online DPO: share of sampled answers the verifier accepts"}},
      {"online/tied", {"loom_train_online_tied_ratio", "Online DPO: share of prompts whose samples scored alike (no pair)"}},
      {"online/chosen_score", {"loom_train_online_chosen_score", "Online DPO: mean score of the chosen samples"}},
      {"online/rejected_score", {"loom_train_online_rejected_score", "Online DPO: mean score of the rejected samples"}},
      {"rl/reward", {"loom_train_rl_reward", "RL: mean reward of the step's completions"}},
      {"rl/accuracy", {"loom_train_rl_accuracy_ratio", "RL: share of completions the verifier accepts"}},
      {"rl/kl", {"loom_train_rl_kl_nats", "RL: mean KL divergence from the reference model, nats"}},
      {"rl/advantage_abs", {"loom_train_rl_advantage_abs", "RL: mean absolute advantage"}},
      {"rl/completion_tokens", {"loom_train_rl_completion_tokens", "RL: mean completion length, tokens"}},
  };
  if (auto it = known->find(measure); it != known->end()) return it->second;
  std::string name = "loom_train_";
  for (char c : measure) name += std::isalnum(static_cast<unsigned char>(c)) || c == '_' ? c : '_';
  return {name, absl::StrCat("Training measure \"", measure, "\" of the latest step")};
}

prometheus::Family<prometheus::Gauge>& WorkerMetrics::TrainMeasure(const std::string& measure) {
  prometheus::Family<prometheus::Gauge>*& family = train_measures_[measure];
  if (family == nullptr) {
    const MeasureMetric m = TrainMeasureMetric(measure);
    family = &Gauge(*registry_, m.name, m.help);
  }
  return *family;
}

void WorkerMetrics::OnCheckpoint(const std::string& plan_id, const std::string& stage,
                                 const loom::v1::CheckpointReport& report) {
  if (!(report.save_seconds() > 0)) return;
  absl::MutexLock lock(&mu_);
  Exported& ex = exported_[absl::StrCat(report.rank().job_id(), "/", report.rank().rank())];
  // Family::Add returns the job's one histogram for every rank that reports.
  ex.checkpoint_save = &checkpoint_save_.Add(
      {{"plan", plan_id}, {"stage", stage}},
      prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300});
  ex.checkpoint_save->Observe(report.save_seconds());
}

void WorkerMetrics::SetPeakFlops(double flops_per_second) { peak_flops_.Set(flops_per_second); }

void WorkerMetrics::OnRankExit(const loom::v1::RankExit& exit) {
  absl::MutexLock lock(&mu_);
  const std::string key = absl::StrCat(exit.rank().job_id(), "/", exit.rank().rank());
  if (auto it = exported_.find(key); it != exported_.end()) {
    for (auto& [family, gauge] : it->second.gauges) family->Remove(gauge);
    for (auto& [family, counter] : it->second.counters) family->Remove(counter);
    if (it->second.step_duration != nullptr) step_duration_.Remove(it->second.step_duration);
    prometheus::Histogram* saves = it->second.checkpoint_save;
    exported_.erase(it);
    // The job's checkpoint histogram goes with the last of its ranks here that fed it.
    const bool still_fed = std::any_of(exported_.begin(), exported_.end(),
                                       [saves](const auto& e) { return e.second.checkpoint_save == saves; });
    if (saves != nullptr && !still_fed) checkpoint_save_.Remove(saves);
  }
  // Drop "<key>" and "<key>/<source>" entries.
  for (auto it = tokens_seen_.lower_bound(key);
       it != tokens_seen_.end() && it->first.compare(0, key.size(), key) == 0;) {
    const bool ours = it->first.size() == key.size() || it->first[key.size()] == '/';
    it = ours ? tokens_seen_.erase(it) : std::next(it);
  }
  rank_exits_.Add({{"outcome", exit.exit_code() == 0  ? "ok"
                               : exit.exit_code() < 0 ? "signal"
                                                      : "error"}})
      .Increment();
}

void WorkerMetrics::SetRunning(int ranks) { running_.Set(ranks); }

}  // namespace loom::worker
