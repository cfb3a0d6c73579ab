// Placing one large job: a real loom-coordinator process, W simulated workers of S slots each
// registered through the real protocol (sim_workers.h, one connection per worker, heartbeating
// once a second), then one plan with a single stage of dp x tp ranks submitted through
// PlanService.SubmitPlan. Measured: from the submit call to the last Assignment received by the
// simulated workers, split into the submit call (validation, the synced store write), placement
// (the next scheduler tick and the scheduler: the job's SCHEDULED transition, coordinator clock)
// and delivery (the Assignments written down the workers' streams). The bench checks the
// placement: every rank assigned once, no slot twice, the layout the plan asked for.
//
// The goal (the peer figure) is the scale issue's: a 4,096-rank job placed in under a second.
// Layouts: 512 workers x 8 slots (a GPU cluster's hosts of 8, tensor-parallel groups of 8 fit
// one host) and 4,096 workers x 1 slot (the most workers the scheduler scans per group).
// 4,096 is the validator's limit on dp x tp x pp (common/plan_validation.h kMaxRanks).
//
// "Today" is the figure of the coordinator before the scale work (commit 1fbe804), recorded
// below; `--today PATH` measures another coordinator binary in the same run instead.
#include <cstdio>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/coordinator/sim_workers.h"
#include "common/command_line.h"
#include "common/plan_io.h"

namespace {

using loom::bench::Clock;
using loom::bench::CoordinatorProcess;
using loom::bench::SimCluster;

struct Layout {
  int workers, slots, dp, tp;
  std::string name() const { return absl::StrCat(workers, "x", slots, ":dp", dp, "xtp", tp); }
};

// submit -> last Assignment (ms) at commit 1fbe804 by layout: the median of three runs of this
// bench on the 2-core development machine, 2026-12-04 (bench/README.md).
const std::map<std::string, double> kToday = {
    {"512x8:dp4096xtp1", 294}, {"512x8:dp512xtp8", 264}, {"4096x1:dp4096xtp1", 897}};

std::string PlanYaml(int dp, int tp) {
  // Tiny model (heads divisible by tp), one pretrain stage; the global batch is one sequence per
  // data-parallel rank.
  const int heads = std::max(4, tp);
  return absl::StrCat(
      "name: placement\nseed: 1\n", "model: {layers: 2, d_model: ", 16 * heads, ", heads: ", heads,
      ", kv_heads: ", heads, ", ffn_size: ", 32 * heads, ", vocab_size: 256, max_seq_len: 128}\n",
      "stages:\n  - name: core\n    kind: pretrain\n    tokens: ", int64_t{128} * dp * 10, "\n",
      "    parallel: {dp: ", dp, ", tp: ", tp, ", micro_batch_size: 1}\n", "    optimizer: {lr: 1e-3}\n",
      "    batch_ramp: [{at_tokens: 0, global_batch_tokens: ", int64_t{128} * dp, "}]\n",
      "    seq_len_schedule: [{at_tokens: 0, seq_len: 128}]\n",
      "    data_mix: [{at_tokens: 0, weights: {english: 1}}]\n");
}

struct Result {
  double total_ms = -1, submit_ms = 0, placed_ms = 0, delivered_ms = 0, first_ms = 0;
  std::string error;
};

Result Measure(const std::string& binary, const Layout& layout) {
  Result r;
  const int ranks = layout.dp * layout.tp;
  CoordinatorProcess coordinator(binary);
  if (!coordinator.ok()) {
    r.error = "the coordinator did not start";
    return r;
  }
  SimCluster sim({.coordinator = coordinator.address(),
                  .workers = layout.workers,
                  .slots_per_worker = layout.slots,
                  .connections = 0});
  sim.StartHeartbeats();  // registering thousands of workers takes longer than the timeout
  if (const std::string error = sim.Connect(); !error.empty()) {
    r.error = error;
    return r;
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // settle

  loom::ParsedPlan parsed = loom::ParsePlanText(PlanYaml(layout.dp, layout.tp), loom::PlanFormat::kYaml);
  if (!parsed.errors.empty()) {
    r.error = "plan: " + parsed.errors[0].path + ": " + parsed.errors[0].message;
    return r;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(coordinator.address(), grpc::InsecureChannelCredentials(), args);
  auto plans = loom::v1::PlanService::NewStub(channel);
  channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5));
  loom::v1::SubmitPlanRequest request;
  *request.mutable_plan() = parsed.plan;
  request.set_source("placement_bench");
  loom::v1::SubmitPlanResponse response;

  const int64_t wall0 = loom::bench::WallMs();
  const auto t0 = Clock::now();
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status s = plans->SubmitPlan(&context, request, &response);
    if (!s.ok()) {
      r.error = "SubmitPlan: " + s.error_message();
      return r;
    }
  }
  const auto t_submitted = Clock::now();
  const std::vector<loom::bench::AssignmentSeen> seen =
      sim.WaitForAssignments(static_cast<size_t>(ranks), std::chrono::seconds(60));
  if (seen.size() < static_cast<size_t>(ranks)) {
    r.error = absl::StrCat(seen.size(), " of ", ranks, " assignments arrived in 60 s");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    loom::v1::GetPlanRequest get;
    get.set_plan_id(response.plan_id());
    loom::v1::GetPlanResponse plan;
    if (plans->GetPlan(&context, get, &plan).ok())
      absl::StrAppend(&r.error, "; the job: ", plan.status().jobs(0).reason());
    return r;
  }
  Clock::time_point first = seen.front().at, last = seen.front().at;
  std::set<int> rank_ids;
  std::set<std::pair<int, int>> slots;
  for (const loom::bench::AssignmentSeen& a : seen) {
    first = std::min(first, a.at);
    last = std::max(last, a.at);
    rank_ids.insert(a.assignment.rank().rank());
    slots.insert({a.worker, a.assignment.device_index()});
    const loom::v1::ParallelLayout& l = a.assignment.layout();
    if (l.world_size() != ranks || l.dp() != layout.dp || l.tp() != layout.tp) {
      r.error = absl::StrCat("rank ", a.assignment.rank().rank(), " got layout world_size ", l.world_size(),
                             " dp ", l.dp(), " tp ", l.tp());
      return r;
    }
  }
  if (seen.size() != static_cast<size_t>(ranks) || static_cast<int>(rank_ids.size()) != ranks ||
      slots.size() != seen.size()) {
    r.error = absl::StrCat(seen.size(), " assignments for ", rank_ids.size(), " distinct ranks on ",
                           slots.size(), " distinct slots; want ", ranks, " of each");
    return r;
  }
  // The job's SCHEDULED transition (coordinator clock, Unix ms).
  loom::v1::GetPlanResponse plan;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    loom::v1::GetPlanRequest get;
    get.set_plan_id(response.plan_id());
    const grpc::Status s = plans->GetPlan(&context, get, &plan);
    if (!s.ok()) {
      r.error = "GetPlan: " + s.error_message();
      return r;
    }
  }
  int64_t scheduled_ms = -1;
  for (const auto& t : plan.status().jobs(0).transitions()) {
    if (t.to_state() == loom::v1::JOB_STATE_SCHEDULED) scheduled_ms = t.time_ms();
  }
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  r.total_ms = ms(last - t0);
  r.first_ms = ms(first - t0);
  r.submit_ms = ms(t_submitted - t0);
  r.placed_ms = static_cast<double>(scheduled_ms - wall0) - r.submit_ms;
  r.delivered_ms = r.total_ms - r.submit_ms - r.placed_ms;
  if (sim.ended() != 0) r.error = "worker streams ended: " + sim.first_error();
  return r;
}

bool ParseLayout(const std::string& text, Layout* layout) {
  // WORKERSxSLOTS:dpDPxtpTP, e.g. 512x8:dp4096xtp1
  std::vector<std::string> parts = absl::StrSplit(text, absl::ByAnyChar("x:"));
  if (parts.size() != 4 || parts[2].rfind("dp", 0) != 0 || parts[3].rfind("tp", 0) != 0) return false;
  return absl::SimpleAtoi(parts[0], &layout->workers) && absl::SimpleAtoi(parts[1], &layout->slots) &&
         absl::SimpleAtoi(parts[2].substr(2), &layout->dp) &&
         absl::SimpleAtoi(parts[3].substr(2), &layout->tp) && layout->workers > 0 && layout->slots > 0 &&
         layout->dp > 0 && layout->tp > 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string layouts_text = "512x8:dp4096xtp1,512x8:dp512xtp8,4096x1:dp4096xtp1";
  std::string binary = loom::testing::CoordinatorBinary();
  std::string today_binary;
  loom::CommandLine cl("bench_coordinator_placement",
                       "Time from submitting a plan with one large stage to the last Assignment received "
                       "by simulated workers (a real loom-coordinator process; the workers speak the real "
                       "protocol from this process, one connection each).");
  cl.AddFlag("layouts", &layouts_text,
             "comma-separated WORKERSxSLOTS:dpDPxtpTP, e.g. 512x8:dp4096xtp1 (512 workers of 8 slots, one "
             "stage of dp 4096)");
  cl.AddFlag("coordinator", &binary, "the loom-coordinator binary to measure");
  cl.AddFlag("today", &today_binary,
             "another loom-coordinator binary (e.g. built from commit 1fbe804) to measure in the same run "
             "for the 'today' column; default: the figures recorded in the bench");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  std::vector<Layout> layouts;
  int most = 0;
  for (absl::string_view part : absl::StrSplit(layouts_text, ',', absl::SkipEmpty())) {
    Layout l;
    if (!ParseLayout(std::string(part), &l)) {
      std::fprintf(stderr,
                   "--layouts: '%s' is not WORKERSxSLOTS:dpDPxtpTP; e.g. --layouts 512x8:dp4096xtp1\n",
                   std::string(part).c_str());
      return 2;
    }
    if (l.dp * l.tp > l.workers * l.slots) {
      std::fprintf(stderr, "--layouts: '%s' asks for %d ranks on %d slots; add workers or slots\n",
                   std::string(part).c_str(), l.dp * l.tp, l.workers * l.slots);
      return 2;
    }
    layouts.push_back(l);
    most = std::max(most, l.workers);
  }
  if (!loom::bench::RaiseFileLimit(static_cast<rlim_t>(most) + 1024)) return 1;

  bool failed = false;
  for (const Layout& l : layouts) {
    const Result now = Measure(binary, l);
    Result today;
    bool have_today = false;
    if (!today_binary.empty()) {
      today = Measure(today_binary, l);
      have_today = true;
    } else if (kToday.contains(l.name())) {
      today.total_ms = kToday.at(l.name());
      have_today = true;
    }
    const std::string what =
        absl::StrCat("dp ", l.dp, l.tp > 1 ? absl::StrCat(" x tp ", l.tp) : "", " (", l.dp * l.tp,
                     " ranks) on ", l.workers, " workers x ", l.slots, " slots");
    if (!now.error.empty()) {
      std::printf("%s: FAILED: %s\n", what.c_str(), now.error.c_str());
      failed = true;
      continue;
    }
    std::string today_text;
    if (have_today) {
      today_text = today.error.empty() ? absl::StrFormat("; today %.0f ms", today.total_ms)
                                       : absl::StrCat("; today failed: ", today.error);
    }
    std::printf(
        "%s: submit -> last assignment %6.0f ms = submit %.0f + placement %.0f + delivery %.0f (first "
        "assignment at %.0f)  (goal < 1000 ms; ratio %.2f%s)\n",
        what.c_str(), now.total_ms, now.submit_ms, now.placed_ms, now.delivered_ms, now.first_ms,
        now.total_ms / 1000.0, today_text.c_str());
    std::fflush(stdout);
  }
  return failed ? 1 : 0;
}
