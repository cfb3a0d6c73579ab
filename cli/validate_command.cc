// `loom validate PLAN`: parse and validate a plan exactly as the coordinator would.
#include <cstdio>

#include "cli/commands.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_summary.h"

namespace loom::cli {

int ReportPlanError(const absl::Status& status) {
  std::string message(status.message());
  if (message.empty() || message.back() != '\n') message.push_back('\n');
  std::fputs(message.c_str(), stderr);
  return 1;
}

int RunValidate(const Args& args) {
  std::string path;
  bool quiet = false;
  CommandLine cl("loom validate",
                 "Checks a plan: prints `ok` and a one-screen summary, or every error "
                 "with its field path, line and a hint (exit code 1).");
  cl.AddPositional("PLAN", &path, "plan file: .yaml/.yml, .json, or .textproto/.txtpb/.pbtxt");
  cl.AddFlag("quiet", &quiet, "print only `ok` or the errors, no summary");
  cl.AddEpilog("example:\n  loom validate examples/plans/llama3_tiny.yaml");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;

  absl::StatusOr<loom::v1::TrainingPlan> plan = LoadPlan(path);
  if (!plan.ok()) {
    return ReportPlanError(plan.status());
  }
  std::printf("ok\n");
  if (!quiet) std::printf("%s", SummarizePlan(*plan).c_str());
  return 0;
}

}  // namespace loom::cli
