// `loom metrics`: a plan's run history (PlanService.GetMetrics) as a table, CSV or JSON lines.
// The JSON shapes are shared with `loom watch --json` (history_json.h). `loom logs`: a rank's
// log through the coordinator (PlanService.ReadLog).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/history_json.h"
#include "common/command_line.h"

namespace loom::cli {
namespace {

// The names of the extra columns: every eval set, eval metric and train metric any point has.
struct Columns {
  std::set<std::string> eval_loss, eval_metrics, train_metrics;
};

Columns ColumnsOf(const loom::v1::GetMetricsResponse& r) {
  Columns c;
  for (const loom::v1::MetricPoint& p : r.points()) {
    for (const auto& [k, v] : p.eval_loss()) c.eval_loss.insert(k);
    for (const auto& [k, v] : p.eval_metrics()) c.eval_metrics.insert(k);
    for (const auto& [k, v] : p.train_metrics()) c.train_metrics.insert(k);
  }
  return c;
}

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

// Shortest text that reads back as the same double ("nan", "inf" as C prints them).
std::string Number(double v) { return absl::StrFormat("%.17g", v); }

template <typename Map>
std::string Optional(const Map& map, const std::string& key) {
  auto it = map.find(key);
  return it == map.end() ? "" : Number(it->second);
}

void PrintCsv(const loom::v1::GetMetricsResponse& r) {
  const Columns c = ColumnsOf(r);
  std::vector<std::string> header = {"stage",     "attempt",           "step",   "tokens", "loss", "learning_rate",
                                     "grad_norm", "tokens_per_second", "time_ms"};
  for (const std::string& k : c.eval_loss) header.push_back(CsvField("eval_loss/" + k));
  for (const std::string& k : c.eval_metrics) header.push_back(CsvField("eval/" + k));
  for (const std::string& k : c.train_metrics) header.push_back(CsvField("train/" + k));
  std::printf("%s\n", absl::StrJoin(header, ",").c_str());
  for (const loom::v1::MetricPoint& p : r.points()) {
    std::vector<std::string> row = {CsvField(p.stage()),        absl::StrCat(p.attempt()),
                                    absl::StrCat(p.step()),     absl::StrCat(p.tokens()),
                                    Number(p.loss()),           Number(p.learning_rate()),
                                    Number(p.grad_norm()),      Number(p.tokens_per_second()),
                                    absl::StrCat(p.time_ms())};
    for (const std::string& k : c.eval_loss) row.push_back(Optional(p.eval_loss(), k));
    for (const std::string& k : c.eval_metrics) row.push_back(Optional(p.eval_metrics(), k));
    for (const std::string& k : c.train_metrics) row.push_back(Optional(p.train_metrics(), k));
    std::printf("%s\n", absl::StrJoin(row, ",").c_str());
  }
}

std::string Compact(double v) {
  if (std::isnan(v) || std::isinf(v)) return Number(v);
  const double a = std::fabs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e6)) return absl::StrFormat("%.3e", v);
  return absl::StrFormat("%.4f", v);
}

void PrintTable(const loom::v1::GetMetricsResponse& r) {
  const Columns c = ColumnsOf(r);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> header = {"STAGE",     "ATTEMPT", "STEP", "TOKENS", "LOSS", "LR",
                                     "GRAD_NORM", "TOK/S",   "TIME (UTC)"};
  for (const std::string& k : c.eval_loss) header.push_back("EVAL_LOSS/" + k);
  for (const std::string& k : c.eval_metrics) header.push_back("EVAL/" + k);
  rows.push_back(header);
  for (const loom::v1::MetricPoint& p : r.points()) {
    std::vector<std::string> row = {
        p.stage(),
        absl::StrCat(p.attempt()),
        absl::StrCat(p.step()),
        absl::StrCat(p.tokens()),
        Compact(p.loss()),
        absl::StrFormat("%.3e", p.learning_rate()),
        Compact(p.grad_norm()),
        absl::StrFormat("%.0f", p.tokens_per_second()),
        p.time_ms() > 0 ? absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(p.time_ms()), absl::UTCTimeZone())
                        : "-"};
    for (const std::string& k : c.eval_loss) {
      auto it = p.eval_loss().find(k);
      row.push_back(it == p.eval_loss().end() ? "-" : Compact(it->second));
    }
    for (const std::string& k : c.eval_metrics) {
      auto it = p.eval_metrics().find(k);
      row.push_back(it == p.eval_metrics().end() ? "-" : Compact(it->second));
    }
    rows.push_back(std::move(row));
  }
  std::vector<size_t> width(header.size(), 0);
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      // Text columns to the left, numbers to the right.
      const bool left = i == 0 || i == 8;
      absl::StrAppend(&line, i == 0 ? "" : "  ",
                      left ? absl::StrFormat("%-*s", static_cast<int>(width[i]), row[i])
                           : absl::StrFormat("%*s", static_cast<int>(width[i]), row[i]));
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

}  // namespace

int RunMetrics(const Args& args) {
  std::string plan_id, stage, format = "table";
  CommandLine cl("loom metrics",
                 "Prints a plan's run history: per step of each stage, as its rank 0 reported it, the attempt, "
                 "step, tokens, loss, learning rate, gradient norm, tokens/s, time and evaluation results. The "
                 "coordinator keeps it durably, at most --history-points points per job (older ones are thinned "
                 "evenly; the newest is always there).");
  cl.AddPositional("PLAN", &plan_id, "plan id");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("stage", &stage, "only this stage (default: every stage, in the plan's order)");
  cl.AddFlag("format", &format,
             "table (for people), csv (a header line, then one row per point; eval_loss/SET, eval/NAME and "
             "train/NAME columns for the results any point has) or jsonl (one JSON object per point, fields as "
             "in docs/cli.md)");
  cl.AddEpilog(
      "examples:\n  loom metrics demo-1\n  loom metrics demo-1 --stage core --format csv > core.csv\n"
      "  loom metrics demo-1 --format jsonl | jq .loss");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (format != "table" && format != "csv" && format != "jsonl") {
    std::fprintf(stderr, "loom metrics: --format %s: expected table, csv or jsonl\n", format.c_str());
    return 2;
  }
  Client client;
  if (!ConnectOrReport("metrics", target, &client)) return 2;
  loom::v1::GetMetricsRequest request;
  request.set_plan_id(plan_id);
  request.set_stage(stage);
  loom::v1::GetMetricsResponse response;
  grpc::Status status = client.stub->GetMetrics(CallContext(30).get(), request, &response);
  if (!status.ok()) return ReportRpcError("metrics " + plan_id, client, status);
  if (format == "csv") {
    PrintCsv(response);
  } else if (format == "jsonl") {
    for (const loom::v1::MetricPoint& p : response.points()) std::printf("%s\n", PointJson(plan_id, p).c_str());
  } else if (response.points_size() == 0) {
    std::printf("no steps recorded yet for %s%s\n", plan_id.c_str(), stage.empty() ? "" : (" stage " + stage).c_str());
  } else {
    PrintTable(response);
  }
  return 0;
}

int RunLogs(const Args& args) {
  std::string plan_id, stage;
  int rank = 0;
  int64_t bytes = 0;
  bool follow = false;
  CommandLine cl("loom logs",
                 "Prints a rank's log (its stdout and stderr) of a stage's current or last attempt, read through "
                 "the coordinator from the worker that runs or ran it.");
  cl.AddPositional("PLAN", &plan_id, "plan id");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("stage", &stage, "the stage (required)");
  cl.AddFlag("rank", &rank, "the rank (default 0)");
  cl.AddFlag("bytes", &bytes, "only the last BYTES bytes of the log (default 0: all of it)");
  cl.AddFlag("follow", &follow, "keep printing what the rank writes until its job ends (Ctrl-C stops)");
  cl.AddEpilog("examples:\n  loom logs demo-1 --stage core\n  loom logs demo-1 --stage core --rank 1 --follow");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (stage.empty()) {
    std::fprintf(stderr, "loom logs: --stage is required (`loom status %s` lists the stages)\n", plan_id.c_str());
    return 2;
  }
  if (bytes < 0) {
    std::fprintf(stderr, "loom logs: --bytes %lld: must be 0 or more\n", static_cast<long long>(bytes));
    return 2;
  }
  Client client;
  if (!ConnectOrReport("logs", target, &client)) return 2;
  int64_t offset = bytes > 0 ? -bytes : 0;
  int attempt = -1;
  while (true) {
    loom::v1::ReadLogRequest request;
    request.set_plan_id(plan_id);
    request.set_stage(stage);
    request.set_rank(rank);
    request.set_offset(offset);
    loom::v1::ReadLogResponse response;
    grpc::Status status = client.stub->ReadLog(CallContext(20).get(), request, &response);
    if (!status.ok()) return ReportRpcError(absl::StrCat("logs ", plan_id, " --stage ", stage, " --rank ", rank), client, status);
    if (attempt >= 0 && response.attempt() != attempt) {
      // A new attempt writes a new log: start at its beginning.
      std::fprintf(stderr, "loom logs: attempt %d started (on worker %s)\n", response.attempt(),
                   response.worker_id().c_str());
      attempt = response.attempt();
      offset = 0;
      continue;
    }
    attempt = response.attempt();
    std::fwrite(response.data().data(), 1, response.data().size(), stdout);
    std::fflush(stdout);
    offset = response.offset() + static_cast<int64_t>(response.data().size());
    if (offset < response.size()) continue;  // more than one chunk
    if (!follow || response.job_ended()) return 0;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

}  // namespace loom::cli
