#include "cli/history_json.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "cli/client.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

nlohmann::json Num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

template <typename Map>
nlohmann::json Object(const Map& map) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, v] : map) out[k] = Num(v);
  return out;
}

std::string Dump(const nlohmann::json& j) {
  // Invalid UTF-8 in a name (from a plan) is replaced, not thrown.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string PointJson(const std::string& plan_id, const loom::v1::MetricPoint& p) {
  nlohmann::json j = {{"type", "step"},
                      {"plan_id", plan_id},
                      {"stage", p.stage()},
                      {"attempt", p.attempt()},
                      {"step", p.step()},
                      {"tokens", p.tokens()},
                      {"loss", Num(p.loss())},
                      {"learning_rate", Num(p.learning_rate())},
                      {"grad_norm", Num(p.grad_norm())},
                      {"tokens_per_second", Num(p.tokens_per_second())},
                      {"time_ms", p.time_ms()},
                      {"eval_loss", Object(p.eval_loss())},
                      {"eval_metrics", Object(p.eval_metrics())},
                      {"train_metrics", Object(p.train_metrics())}};
  return Dump(j);
}

std::vector<std::string> WatchJson::Lines(const loom::v1::PlanEvent& event) {
  std::vector<std::string> lines;
  const loom::v1::PlanStatus& plan = event.status();
  for (const loom::v1::JobStatus& job : plan.jobs()) {
    const std::string state = absl::StrCat(StateName(job.state()), "#", job.attempt());
    std::string& last = job_state_[job.stage()];
    if (last != state) {
      last = state;
      lines.push_back(Dump({{"type", "job"},
                            {"plan_id", plan.plan_id()},
                            {"stage", job.stage()},
                            {"time_ms", event.time_ms()},
                            {"state", StateName(job.state())},
                            {"attempt", job.attempt()},
                            {"reason", job.reason()}}));
    }
    if (job.has_progress()) {
      const loom::v1::Progress& p = job.progress();
      const std::pair<int, int64_t> at = {p.rank().attempt(), p.step()};
      auto it = shown_.find(job.stage());
      if (it == shown_.end() || it->second != at) {
        shown_[job.stage()] = at;
        loom::v1::MetricPoint point;
        point.set_stage(job.stage());
        point.set_attempt(p.rank().attempt());
        point.set_step(p.step());
        point.set_tokens(p.tokens());
        point.set_loss(p.loss());
        point.set_learning_rate(p.learning_rate());
        point.set_grad_norm(p.grad_norm());
        point.set_tokens_per_second(p.tokens_per_second());
        point.set_time_ms(p.time_ms());
        point.mutable_eval_loss()->insert(p.eval_loss().begin(), p.eval_loss().end());
        point.mutable_eval_metrics()->insert(p.eval_metrics().begin(), p.eval_metrics().end());
        point.mutable_train_metrics()->insert(p.train_metrics().begin(), p.train_metrics().end());
        lines.push_back(PointJson(plan.plan_id(), point));
      }
    }
  }
  if (!event.message().empty() && event.message() != last_message_) {
    last_message_ = event.message();
    lines.push_back(Dump({{"type", "event"},
                          {"plan_id", plan.plan_id()},
                          {"time_ms", event.time_ms()},
                          {"message", event.message()}}));
  }
  // The plan's state comes first while it runs, last when it ended (the watch's last line).
  const std::string plan_state = StateName(plan.state());
  if (plan_state != plan_state_) {
    plan_state_ = plan_state;
    const bool ended = plan.state() != loom::v1::PLAN_STATE_ACTIVE;
    lines.insert(ended ? lines.end() : lines.begin(), Dump({{"type", "plan"},
                          {"plan_id", plan.plan_id()},
                          {"time_ms", event.time_ms()},
                          {"state", plan_state},
                          {"ended", ended}}));
  }
  return lines;
}

}  // namespace loom::cli
