// The client commands that talk to a coordinator: submit, status, watch, cancel, workers,
// checkpoints. Every call has a deadline; an unreachable coordinator is named in the message.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/client.h"
#include "cli/commands.h"
#include "cli/history_json.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_validation.h"
#include "common/proto_names.h"
#include "common/stage_inputs.h"

namespace loom::cli {
namespace {

void PrintPlan(const loom::v1::PlanStatus& plan) {
  std::printf("%s  %s", plan.plan_id().c_str(), StateName(plan.state()).c_str());
  if (plan.priority() != 0) std::printf("  priority %d", plan.priority());
  std::printf("\n");
  if (!plan.submitted_by().name().empty()) {
    std::printf("  submitted by %s (%s)\n", plan.submitted_by().name().c_str(), plan.submitted_by().role().c_str());
  }
  size_t width = 0;
  for (const auto& job : plan.jobs()) width = std::max(width, job.stage().size());
  if (const std::string goodput = GoodputLine(plan); !goodput.empty()) std::printf("  %s\n", goodput.c_str());
  for (const auto& job : plan.jobs()) {
    std::printf("  %s\n", JobLine(job, width).c_str());
    // The path on a line of its own, unless the job's reason already shows it.
    if (job.has_final_checkpoint() && job.reason().find(job.final_checkpoint().path()) == std::string::npos)
      std::printf("  %*s final checkpoint %s\n", static_cast<int>(width), "",
                  job.final_checkpoint().path().c_str());
  }
}

}  // namespace

int RunSubmit(const Args& args) {
  std::string path, until;
  bool quiet = false;
  CommandLine cl("loom submit", "Validates a plan and submits it; prints the plan id.");
  cl.AddPositional("PLAN", &path, "plan file (.yaml, .json or .textproto)");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("quiet", &quiet, "print only the plan id");
  cl.AddFlag("until", &until,
             "submit the stages up to and including this one (stages only start from earlier ones)");
  cl.AddEpilog("example:\n  loom submit examples/plans/demo.yaml && loom watch demo-1");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  absl::StatusOr<loom::v1::TrainingPlan> plan = LoadPlan(path);
  if (!plan.ok()) {
    return ReportPlanError(plan.status());
  }
  if (!until.empty()) {
    const int last = FindStage(*plan, until);
    if (last < 0) {
      std::vector<std::string> names;
      for (const loom::v1::Stage& s : plan->stages()) names.push_back(s.name());
      std::fprintf(stderr, "loom submit: --until: the plan has no stage '%s' (stages: %s)\n", until.c_str(),
                   absl::StrJoin(names, ", ").c_str());
      return 2;
    }
    plan->mutable_stages()->DeleteSubrange(last + 1, plan->stages_size() - last - 1);
    if (const auto errors = ValidatePlan(*plan); !errors.empty()) {
      std::fprintf(stderr, "%s", FormatPlanErrors(errors).c_str());
      return 1;
    }
  }
  Client client;
  if (!ConnectOrReport("submit", target, &client)) return 2;
  loom::v1::SubmitPlanRequest request;
  *request.mutable_plan() = *plan;
  request.set_source(path);
  loom::v1::SubmitPlanResponse response;
  grpc::Status status = client.stub->SubmitPlan(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("submit " + path, client, status);
  std::printf("%s\n", response.plan_id().c_str());
  if (!quiet) std::fprintf(stderr, "submitted; follow it with `loom watch %s`\n", response.plan_id().c_str());
  return 0;
}

int RunStatus(const Args& args) {
  std::string plan_id;
  bool json = false, all = true;
  CommandLine cl("loom status", "Shows a plan's jobs (state, attempt, progress, reason), or every plan.");
  cl.AddPositional("PLAN", &plan_id, "plan id (omit for every plan)", /*required=*/false);
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("json", &json, "print loom.v1.PlanStatus (or ListPlansResponse) as JSON");
  cl.AddFlag("all", &all, "without PLAN: include plans that ended");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  Client client;
  if (!ConnectOrReport("status", target, &client)) return 2;
  if (!plan_id.empty()) {
    loom::v1::GetPlanRequest request;
    request.set_plan_id(plan_id);
    loom::v1::GetPlanResponse response;
    grpc::Status status = client.stub->GetPlan(CallContext().get(), request, &response);
    if (!status.ok()) return ReportRpcError("status " + plan_id, client, status);
    if (json) {
      std::printf("%s\n", ToJson(response.status()).c_str());
    } else {
      PrintPlan(response.status());
    }
    return 0;
  }
  loom::v1::ListPlansRequest request;
  request.set_include_finished(all);
  loom::v1::ListPlansResponse response;
  grpc::Status status = client.stub->ListPlans(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("status", client, status);
  if (json) {
    std::printf("%s\n", ToJson(response).c_str());
  } else if (response.plans_size() == 0) {
    std::printf("no plans\n");
  } else {
    for (const auto& plan : response.plans()) PrintPlan(plan);
  }
  return 0;
}

int RunWatch(const Args& args) {
  std::string plan_id;
  CommandLine cl("loom watch",
                 "Follows a plan live: one line per stage with step, tokens/budget, loss, tokens/s and ETA. "
                 "Exits when the plan ends: 0 if it succeeded, 1 otherwise. Plain lines when stdout is not a "
                 "terminal.");
  cl.AddPositional("PLAN", &plan_id, "plan id");
  Target target;
  AddTargetFlags(cl, &target);
  bool json = false;
  cl.AddFlag("json", &json,
             "print JSON lines instead, one object per line with a \"type\": \"plan\" (the plan's state: the "
             "first line, and the last when it ends), \"job\" (a stage's state or attempt changed), \"step\" (a "
             "stage's newest step; steps between two updates are not repeated, `loom metrics` has them all), "
             "\"event\" (what changed). Fields: docs/cli.md");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  const bool tty = !json && isatty(STDOUT_FILENO) != 0;
  WatchJson json_lines;
  Client client;
  if (!ConnectOrReport("watch", target, &client)) return 2;
  int drawn = 0;                        // lines of the last redraw (terminal mode)
  std::vector<std::string> last_lines;  // plain mode
  std::string last_message;
  int failures = 0;
  while (true) {
    grpc::ClientContext context;
    loom::v1::WatchPlanRequest request;
    request.set_plan_id(plan_id);
    std::unique_ptr<grpc::ClientReader<loom::v1::PlanEvent>> reader =
        client.stub->WatchPlan(&context, request);
    loom::v1::PlanEvent event;
    while (reader->Read(&event)) {
      failures = 0;
      const loom::v1::PlanStatus& plan = event.status();
      if (json) {
        for (const std::string& line : json_lines.Lines(event)) std::printf("%s\n", line.c_str());
        std::fflush(stdout);
        if (plan.state() != loom::v1::PLAN_STATE_ACTIVE) return plan.state() == loom::v1::PLAN_STATE_SUCCEEDED ? 0 : 1;
        continue;
      }
      size_t width = 0;
      for (const auto& job : plan.jobs()) width = std::max(width, job.stage().size());
      std::string text;
      for (const auto& job : plan.jobs()) absl::StrAppend(&text, JobLine(job, width), "\n");
      if (tty) {
        for (int i = 0; i < drawn; ++i) std::printf("\x1b[1A\x1b[2K");
        std::printf("%s  %s\n%s", plan.plan_id().c_str(), StateName(plan.state()).c_str(), text.c_str());
        drawn = plan.jobs_size() + 1;
      } else {
        if (!event.message().empty() && event.message() != last_message) {
          std::printf("event: %s\n", event.message().c_str());
          last_message = event.message();
        }
        // Logs get only the stages whose line changed, not every stage on every step.
        std::vector<std::string> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
        for (size_t i = 0; i < lines.size(); ++i) {
          if (i >= last_lines.size() || lines[i] != last_lines[i]) std::printf("%s\n", lines[i].c_str());
        }
        last_lines = std::move(lines);
      }
      std::fflush(stdout);
      if (plan.state() != loom::v1::PLAN_STATE_ACTIVE) {
        std::printf("plan %s %s\n", plan.plan_id().c_str(), StateName(plan.state()).c_str());
        return plan.state() == loom::v1::PLAN_STATE_SUCCEEDED ? 0 : 1;
      }
    }
    grpc::Status status = reader->Finish();
    if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
        status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      return ReportRpcError("watch " + plan_id, client, status);
    }
    // The coordinator went away (a restart?): keep trying for a while; not with a client
    // certificate that cannot work (Connect only located it).
    if (++failures > 60 || (failures == 1 && client.identity && !CheckTlsIdentity(*client.identity).ok())) {
      return ReportRpcError("watch " + plan_id, client, status);
    }
    if (failures == 1)
      std::fprintf(stderr, "loom: watch: lost the coordinator at %s (%s); retrying\n", target.address.c_str(),
                   status.error_message().c_str());
    std::this_thread::sleep_for(std::chrono::seconds(1));
    drawn = 0;
  }
}

int RunCancel(const Args& args) {
  std::string plan_id, reason;
  CommandLine cl("loom cancel",
                 "Cancels a plan: its running jobs are aborted, the others will not start. With TLS, a submitter "
                 "may cancel only the plans it submitted (`loom status` shows who did); an admin, any plan.");
  cl.AddPositional("PLAN", &plan_id, "plan id");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("reason", &reason, "why (recorded in the jobs' transitions)");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  Client client;
  if (!ConnectOrReport("cancel", target, &client)) return 2;
  loom::v1::CancelPlanRequest request;
  request.set_plan_id(plan_id);
  request.set_reason(reason);
  loom::v1::CancelPlanResponse response;
  grpc::Status status = client.stub->CancelPlan(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("cancel " + plan_id, client, status);
  std::printf("cancelled %s\n", plan_id.c_str());
  return 0;
}

int RunWorkers(const Args& args) {
  std::string action, worker_id;
  bool json = false;
  CommandLine cl("loom workers",
                 "Lists the worker daemons: state, slots used, last heartbeat, ranks. `loom workers drain ID` "
                 "stops placing new ranks on a worker and makes its running ranks checkpoint at their next step "
                 "and stop, so their jobs move to other workers losing no step; `undrain ID` ends the drain.");
  cl.AddPositional("ACTION", &action, "drain or undrain (optional)", /*required=*/false);
  cl.AddPositional("WORKER", &worker_id, "worker id, for drain and undrain", /*required=*/false);
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("json", &json, "print loom.v1.ListWorkersResponse as JSON");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (!action.empty() && ((action != "drain" && action != "undrain") || worker_id.empty())) {
    std::fprintf(stderr, "loom workers: expected `loom workers`, `loom workers drain ID` or `loom workers undrain ID`\n");
    return 2;
  }
  Client client;
  if (!ConnectOrReport("workers", target, &client)) return 2;
  if (!action.empty()) {
    loom::v1::DrainWorkerRequest request;
    request.set_worker_id(worker_id);
    request.set_undrain(action == "undrain");
    loom::v1::DrainWorkerResponse drained;
    grpc::Status status = client.stub->DrainWorker(CallContext().get(), request, &drained);
    if (!status.ok()) return ReportRpcError(action + " " + worker_id, client, status);
    std::printf("%s %s: %d ranks still running there\n", worker_id.c_str(),
                action == "drain" ? "drained (no new ranks)" : "undrained", drained.worker().slots_used());
    return 0;
  }
  loom::v1::ListWorkersResponse response;
  grpc::Status status =
      client.stub->ListWorkers(CallContext().get(), loom::v1::ListWorkersRequest(), &response);
  if (!status.ok()) return ReportRpcError("workers", client, status);
  if (json) {
    std::printf("%s\n", ToJson(response).c_str());
    return 0;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (const auto& w : response.workers()) {
    std::string state = EnumName(w.state());
    std::printf("%-24s %-5s %d/%d slots  heartbeat %.1fs ago  %s %s%s%s\n", w.worker_id().c_str(), state.c_str(),
                w.slots_used(), w.slots(), (now - w.last_heartbeat_ms()) / 1000.0, w.host().c_str(),
                w.address().c_str(), w.draining() ? "  DRAINING" : "",
                w.lost_reason().empty() ? "" : ("  (" + w.lost_reason() + ")").c_str());
    for (const auto& r : w.ranks()) std::printf("    %s\n", r.c_str());
  }
  if (response.workers_size() == 0) std::printf("no workers\n");
  return 0;
}

int RunCheckpoints(const Args& args) {
  std::string plan_id, stage;
  bool json = false, final_only = false;
  CommandLine cl("loom checkpoints", "Lists a plan's committed checkpoints (every shard durable).");
  cl.AddPositional("PLAN", &plan_id, "plan id");
  Target target;
  AddTargetFlags(cl, &target);
  cl.AddFlag("stage", &stage, "only this stage");
  cl.AddFlag("json", &json, "print loom.v1.ListCheckpointsResponse as JSON");
  cl.AddFlag("final", &final_only,
             "print only the path of --stage's final checkpoint (for scripts); exit 1 when it has none yet");
  cl.AddEpilog("Checkpoints live under <checkpoint root>/<plan>/<stage>/attempt-<N>/step-<S>; the coordinator\n"
               "deletes those that checkpoint.keep_last no longer keeps and no later stage needs.\n\n"
               "example:\n  loom generate $(loom checkpoints demo-1 --stage averaged --final) --tokenizer ...");
  int exit_code = 0;
  if (!ParseOrExit(cl, args, &exit_code)) return exit_code;
  if (final_only && stage.empty()) {
    std::fprintf(stderr, "loom checkpoints: --final needs --stage STAGE (whose final checkpoint to print)\n");
    return 2;
  }
  Client client;
  if (!ConnectOrReport("checkpoints", target, &client)) return 2;
  loom::v1::ListCheckpointsRequest request;
  request.set_plan_id(plan_id);
  request.set_stage(stage);
  loom::v1::ListCheckpointsResponse response;
  grpc::Status status = client.stub->ListCheckpoints(CallContext().get(), request, &response);
  if (!status.ok()) return ReportRpcError("checkpoints " + plan_id, client, status);
  if (json) {
    std::printf("%s\n", ToJson(response).c_str());
    return 0;
  }
  if (final_only) {
    for (const auto& c : response.checkpoints()) {
      if (c.final()) {
        std::printf("%s\n", c.path().c_str());
        return 0;
      }
    }
    std::fprintf(stderr, "loom checkpoints: stage '%s' of %s has committed no final checkpoint\n", stage.c_str(),
                 plan_id.c_str());
    return 1;
  }
  for (const auto& c : response.checkpoints()) {
    std::printf("%-16s step %-8lld tokens %-12lld attempt %d%s  %s\n", c.stage().c_str(),
                static_cast<long long>(c.step()), static_cast<long long>(c.tokens()), c.attempt(),
                c.final() ? "  final" : "", c.path().c_str());
    if (!c.bad().empty()) std::printf("%-16s   BAD, never resumed from: %s\n", "", c.bad().c_str());
  }
  if (response.checkpoints_size() == 0) std::printf("no checkpoints\n");
  return 0;
}

}  // namespace loom::cli
