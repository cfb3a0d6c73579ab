#include "worker/daemon/worker_metrics.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"

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
      eval_loss_(Gauge(*registry_, "loom_eval_loss", "Held-out loss of the latest evaluation, by source")),
      train_metric_(Gauge(*registry_, "loom_train_metric",
                          "Measures of the latest step beyond the loss, by name (dpo/accuracy, dpo/margin, "
                          "dpo/chosen_reward, dpo/rejected_reward)")),
      eval_accuracy_(Gauge(*registry_, "loom_eval_accuracy",
                           "Accuracy of the latest evaluation, by set (math: greedy answers the verifier "
                           "accepts)")),
      step_(Gauge(*registry_, "loom_train_step", "Optimizer steps taken by the stage")),
      checkpoint_save_(prometheus::BuildHistogram()
                           .Name("loom_checkpoint_save_seconds")
                           .Help("Seconds a rank spent writing its checkpoint shard")
                           .Register(*registry_)
                           .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                                            2.5, 5, 10, 30, 60, 120, 300})),
      rank_exits_(prometheus::BuildCounter()
                      .Name("loom_worker_rank_exits_total")
                      .Help("Rank processes that ended, by outcome")
                      .Register(*registry_)),
      running_(Gauge(*registry_, "loom_worker_ranks_running", "Rank processes running").Add({})) {}

void WorkerMetrics::OnProgress(const std::string& plan_id, const std::string& stage,
                               const loom::v1::Progress& p) {
  // Every value below is job-global (identical on all ranks): only global rank 0 exports it.
  if (p.rank().rank() != 0) return;
  const prometheus::Labels labels = {{"plan", plan_id}, {"stage", stage}};
  const std::string key = absl::StrCat(p.rank().job_id(), "/", p.rank().rank());
  absl::MutexLock lock(&mu_);
  Exported& ex = exported_[key];
  auto set = [&ex](prometheus::Family<prometheus::Gauge>& family, const prometheus::Labels& l, double v) {
    prometheus::Gauge& g = family.Add(l);
    g.Set(v);
    ex.gauges.emplace_back(&family, &g);
  };
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
    l["source"] = set_name;
    set(eval_loss_, l, loss);
  }
  for (const auto& [name, value] : p.train_metrics()) {
    prometheus::Labels l = labels;
    l["name"] = name;
    set(train_metric_, l, value);
  }
  // eval_metrics keys are "<set>/<measure>"; accuracies become a gauge of their own.
  for (const auto& [metric, value] : p.eval_metrics()) {
    const size_t slash = metric.rfind('/');
    if (slash == std::string::npos || metric.substr(slash + 1) != "accuracy") continue;
    prometheus::Labels l = labels;
    l["set"] = metric.substr(0, slash);
    set(eval_accuracy_, l, value);
  }
  // Family::Add returns the same series for the same labels: keep each pointer once.
  auto dedupe = [](auto& v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  };
  dedupe(ex.gauges);
  dedupe(ex.counters);
}

void WorkerMetrics::OnCheckpoint(const loom::v1::CheckpointReport& report) {
  if (report.save_seconds() > 0) checkpoint_save_.Observe(report.save_seconds());
}

void WorkerMetrics::OnRankExit(const loom::v1::RankExit& exit) {
  absl::MutexLock lock(&mu_);
  const std::string key = absl::StrCat(exit.rank().job_id(), "/", exit.rank().rank());
  if (auto it = exported_.find(key); it != exported_.end()) {
    for (auto& [family, gauge] : it->second.gauges) family->Remove(gauge);
    for (auto& [family, counter] : it->second.counters) family->Remove(counter);
    exported_.erase(it);
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
