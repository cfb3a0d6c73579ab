#include "worker/daemon/worker_metrics.h"

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
                  .Help("Tokens consumed by the stage (global, all ranks)")
                  .Register(*registry_)),
      tokens_per_second_(Gauge(*registry_, "loom_train_tokens_per_second", "Training throughput (global)")),
      learning_rate_(Gauge(*registry_, "loom_train_learning_rate", "Learning rate in force")),
      grad_norm_(Gauge(*registry_, "loom_train_grad_norm", "Global gradient norm before clipping")),
      global_batch_(Gauge(*registry_, "loom_train_global_batch_tokens", "Global batch size in tokens")),
      seq_len_(Gauge(*registry_, "loom_train_seq_len", "Sequence length in force")),
      mix_weight_(Gauge(*registry_, "loom_data_mix_weight", "Data mix weight of each source in force")),
      data_tokens_(prometheus::BuildCounter()
                       .Name("loom_data_tokens_total")
                       .Help("Training tokens drawn from each source by the stage (this rank's view of the "
                             "global batch)")
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
  const prometheus::Labels labels = {
      {"plan", plan_id}, {"stage", stage}, {"rank", absl::StrCat(p.rank().rank())}};
  absl::MutexLock lock(&mu_);
  loss_.Add(labels).Set(p.loss());
  tokens_per_second_.Add(labels).Set(p.tokens_per_second());
  learning_rate_.Add(labels).Set(p.learning_rate());
  grad_norm_.Add(labels).Set(p.grad_norm());
  global_batch_.Add(labels).Set(static_cast<double>(p.global_batch_tokens()));
  seq_len_.Add(labels).Set(p.seq_len());
  step_.Add(labels).Set(static_cast<double>(p.step()));
  // A counter only goes up: after a resume from an earlier checkpoint it waits until the stage
  // passes the tokens it had already shown.
  const std::string key = absl::StrCat(plan_id, "/", stage, "/", p.rank().rank());
  int64_t& seen = tokens_seen_[key];
  auto& tokens = tokens_.Add(labels);
  if (p.tokens() > seen) {
    tokens.Increment(static_cast<double>(p.tokens() - seen));
    seen = p.tokens();
  }
  for (const auto& [source, weight] : p.mix_weights()) {
    prometheus::Labels l = labels;
    l["source"] = source;
    mix_weight_.Add(l).Set(weight);
  }
  for (const auto& [source, drawn] : p.source_tokens()) {
    prometheus::Labels l = labels;
    l["source"] = source;
    int64_t& seen_source = tokens_seen_[absl::StrCat(key, "/", source)];
    if (drawn > seen_source) {
      data_tokens_.Add(l).Increment(static_cast<double>(drawn - seen_source));
      seen_source = drawn;
    }
  }
  for (const auto& [set, loss] : p.eval_loss()) {
    prometheus::Labels l = labels;
    l["source"] = set;
    eval_loss_.Add(l).Set(loss);
  }
  for (const auto& [name, value] : p.train_metrics()) {
    prometheus::Labels l = labels;
    l["name"] = name;
    train_metric_.Add(l).Set(value);
  }
  // eval_metrics keys are "<set>/<measure>"; accuracies become a gauge of their own.
  for (const auto& [key, value] : p.eval_metrics()) {
    const size_t slash = key.rfind('/');
    if (slash == std::string::npos || key.substr(slash + 1) != "accuracy") continue;
    prometheus::Labels l = labels;
    l["set"] = key.substr(0, slash);
    eval_accuracy_.Add(l).Set(value);
  }
}

void WorkerMetrics::OnCheckpoint(const loom::v1::CheckpointReport& report) {
  if (report.save_seconds() > 0) checkpoint_save_.Observe(report.save_seconds());
}

void WorkerMetrics::OnRankExit(const loom::v1::RankExit& exit) {
  rank_exits_.Add({{"outcome", exit.exit_code() == 0  ? "ok"
                               : exit.exit_code() < 0 ? "signal"
                                                      : "error"}})
      .Increment();
}

void WorkerMetrics::SetRunning(int ranks) { running_.Set(ranks); }

}  // namespace loom::worker
