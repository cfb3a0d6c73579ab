// The JSON lines of `loom metrics --format jsonl` and `loom watch --json`: one object per line,
// field names stable (docs/cli.md lists them), numbers as JSON numbers (a NaN or infinite loss
// is null). Kept apart from the commands so both print the same shapes.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "loom/v1/coordinator.pb.h"

namespace loom::cli {

// {"type":"step","plan_id":..,"stage":..,"attempt":..,"step":..,"tokens":..,"loss":..,
//  "learning_rate":..,"grad_norm":..,"tokens_per_second":..,"time_ms":..,"eval_loss":{..},
//  "eval_metrics":{..},"train_metrics":{..}}
std::string PointJson(const std::string& plan_id, const loom::v1::MetricPoint& point);

// Turns the events of WatchPlan into JSON lines: "plan" when the plan's state changes (the first
// line, and the last once the plan ended), "job" when a job's state or attempt changes, "step" when a job's rank 0
// reported a step this watch has not shown yet, "event" for each new event message. Remembers
// what it showed, so a watch that reconnects after a coordinator restart repeats nothing.
class WatchJson {
 public:
  std::vector<std::string> Lines(const loom::v1::PlanEvent& event);

 private:
  std::string plan_state_;
  std::map<std::string, std::string> job_state_;           // by stage: "<state>#<attempt>"
  std::map<std::string, std::pair<int, int64_t>> shown_;  // by stage: attempt, step
  std::string last_message_;
};

}  // namespace loom::cli
