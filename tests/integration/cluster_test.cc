// The control plane end to end: a real coordinator and real worker daemons on 127.0.0.1, the
// fake rank (fake_rank_main.cc) as the rank program, the real `loom` client, SIGKILL for failures.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include <gtest/gtest.h>

#include "common/checkpoint_io.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/grpc_health_check.h"
#include "tests/integration/cluster_harness.h"
#include "worker/rank_protocol.h"

namespace loom::testing {
namespace {

using loom::v1::JobState;
using loom::v1::PlanStatus;

const std::string kPlan = SourcePath("tests/integration/two_stage_plan.yaml");

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// Writes the two-stage plan with `extra` appended at the top level.
std::string PlanWith(const Cluster& cluster, const std::string& extra) {
  const std::string path = cluster.dir() + "/plan.yaml";
  std::ofstream(path) << ReadAll(kPlan) << extra << "\n";
  return path;
}

std::map<int64_t, std::string> Losses(const std::string& path) {
  std::map<int64_t, std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int64_t step;
    std::string loss;
    if (fields >> step >> loss) out[step] = loss;
  }
  return out;
}

bool HasTransition(const loom::v1::JobStatus& job, JobState to, const std::string& reason_part) {
  for (const auto& t : job.transitions()) {
    if (t.to_state() == to && t.reason().find(reason_part) != std::string::npos) return true;
  }
  return false;
}

TEST(Cluster, TwoStagePlanSucceedsAndHandsOverTheFinalCheckpoint) {
  Cluster cluster;
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  cluster.StartWorker("w2", 2);
  const std::string id = cluster.Submit(kPlan);
  ASSERT_EQ(id, "twostage-1");
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Loom({"status", id}).out << cluster.Logs();
  ASSERT_EQ(s.jobs_size(), 2);
  const auto& core = s.jobs(0);
  const auto& more = s.jobs(1);
  EXPECT_EQ(core.state(), loom::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(more.state(), loom::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(core.final_checkpoint().path(), cluster.checkpoint_root() + "/twostage-1/core/attempt-1/step-000020");
  EXPECT_EQ(more.final_checkpoint().path(), cluster.checkpoint_root() + "/twostage-1/more/attempt-1/step-000010");
  EXPECT_TRUE(core.final_checkpoint().final());
  EXPECT_EQ(core.progress().step(), 20);
  EXPECT_EQ(core.progress().tokens(), 5120);
  // Stage 2 started from stage 1's final checkpoint, and its assignment said so.
  ASSERT_FALSE(more.inputs().from().empty());
  EXPECT_EQ(more.inputs().from(), core.final_checkpoint().path());
  EXPECT_TRUE(ReadCheckpointManifest(core.final_checkpoint().path()).ok());
  std::string assignment_path;
  for (const std::string w : {"w1", "w2"}) {
    const std::string p = cluster.work_dir(w) + "/twostage-1/more#1/rank0/assignment.pb";
    if (std::filesystem::exists(p)) assignment_path = p;
  }
  absl::StatusOr<loom::v1::Assignment> a = ReadAssignment(assignment_path);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->inputs().from(), core.final_checkpoint().path());
  EXPECT_EQ(a->layout().world_size(), 2);
  EXPECT_EQ(a->checkpoint_dir(), cluster.checkpoint_root() + "/twostage-1/more/attempt-1");
  EXPECT_EQ(a->rendezvous_prefix(), "twostage-1/more#1/");
  EXPECT_EQ(a->stage().optimizer().lr(), 1e-3);  // defaults applied
  // Transitions with attempts and reasons, oldest first.
  ASSERT_GE(core.transitions_size(), 4);
  EXPECT_EQ(core.transitions(0).to_state(), loom::v1::JOB_STATE_PENDING);
  EXPECT_EQ(core.transitions(1).to_state(), loom::v1::JOB_STATE_SCHEDULED);
  EXPECT_EQ(core.transitions(1).attempt(), 1);
  EXPECT_EQ(core.transitions().rbegin()->to_state(), loom::v1::JOB_STATE_SUCCEEDED);
  // The client's other views agree.
  CommandResult ckpts = cluster.Loom({"checkpoints", id, "--json"});
  EXPECT_EQ(ckpts.exit_code, 0) << ckpts.err;
  EXPECT_NE(ckpts.out.find("step-000015"), std::string::npos) << ckpts.out;
  EXPECT_NE(ckpts.out.find("\"final\": true"), std::string::npos) << ckpts.out;
  CommandResult watch = cluster.Loom({"watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  EXPECT_NE(watch.out.find("plan twostage-1 SUCCEEDED"), std::string::npos) << watch.out;
  CommandResult workers = cluster.Loom({"workers", "--json"});
  EXPECT_NE(workers.out.find("\"worker_id\": \"w1\""), std::string::npos) << workers.out;
  CommandResult human = cluster.Loom({"status", id});
  EXPECT_NE(human.out.find("core"), std::string::npos);
  EXPECT_NE(human.out.find("SUCCEEDED"), std::string::npos) << human.out;
}

TEST(Cluster, KilledWorkerIsRecoveredFromTheLastCommittedCheckpoint) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  cluster.StartWorker("w2", 2);
  const std::string id = cluster.Submit(kPlan);
  // Kill after a committed checkpoint and a few more steps, so that attempt 2 redoes some.
  PlanStatus s = cluster.WaitForPlan(id, [](const PlanStatus& s) {
    const auto& core = s.jobs(0);
    return core.last_checkpoint().step() >= 5 &&
           core.progress().step() >= core.last_checkpoint().step() + 2 &&
           core.state() == loom::v1::JOB_STATE_RUNNING;
  });
  ASSERT_GT(s.jobs(0).rank_workers_size(), 0);
  const std::string victim = s.jobs(0).rank_workers(0);
  cluster.KillWorker(victim);
  s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(45));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 2);
  EXPECT_TRUE(HasTransition(core, loom::v1::JOB_STATE_RECOVERING, "worker " + victim + " lost"))
      << core.DebugString();
  ASSERT_FALSE(core.resumed_from().empty());
  absl::StatusOr<loom::v1::CheckpointManifest> resumed = ReadCheckpointManifest(core.resumed_from());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_GE(resumed->step(), 5);
  EXPECT_EQ(core.final_checkpoint().attempt(), 2);
  // Attempt 2 ran only the steps after the checkpoint, and they reproduce attempt 1's losses.
  const std::string survivor = victim == "w1" ? "w2" : "w1";
  const auto first = Losses(cluster.work_dir(victim) + "/twostage-1/core#1/rank0/losses.txt");
  const auto second = Losses(cluster.work_dir(survivor) + "/twostage-1/core#2/rank0/losses.txt");
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(second.begin()->first, resumed->step() + 1);
  EXPECT_EQ(second.rbegin()->first, 20);
  int compared = 0;
  for (const auto& [step, loss] : first) {
    if (second.contains(step)) {
      EXPECT_EQ(second.at(step), loss) << "step " << step;
      ++compared;
    }
  }
  EXPECT_GT(compared, 0) << "attempt 1 never ran past the checkpoint it was resumed from";
}

// The newest committed checkpoint is damaged on disk (a flipped byte) before the attempt that
// would resume from it: that attempt reports it bad (exit 65), the checkpoint is listed as bad and
// counted, and the job resumes from the checkpoint before it, reproducing the same losses. Before,
// every attempt resumed from the damaged checkpoint and failed until the job was FAILED.
TEST(Cluster, ACorruptNewestCheckpointIsRetiredAndTheJobResumesFromThePreviousOne) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100", "LOOM_FAKE_CRASH_AT_STEP=13"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  const PlanStatus before = cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).last_checkpoint().step() >= 10; });
  const std::string newest = before.jobs(0).last_checkpoint().path();
  {
    std::fstream f(newest + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('#');
  }
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(60));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const auto& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 3) << "attempt 2 found step 10 bad, attempt 3 resumed from step 5";
  EXPECT_TRUE(HasTransition(core, loom::v1::JOB_STATE_RECOVERING, "checkpoint to resume from corrupt or incomplete"))
      << core.DebugString();
  EXPECT_EQ(core.resumed_from(), cluster.checkpoint_root() + "/twostage-1/core/attempt-1/step-000005");
  // Attempt 3 committed step 10 again under its own name; the bad one it replaces is deleted and
  // no longer listed (CoordinatorTest covers the BAD listing before that).
  const CommandResult listed = cluster.Loom({"checkpoints", id, "--stage", "core"});
  EXPECT_NE(listed.out.find("core/attempt-3/step-000010"), std::string::npos) << listed.out;
  EXPECT_EQ(listed.out.find("core/attempt-1/step-000010"), std::string::npos) << listed.out;
  EXPECT_EQ(listed.out.find("BAD"), std::string::npos) << listed.out;
  EXPECT_FALSE(std::filesystem::exists(newest)) << newest;
  EXPECT_EQ(MetricValue(cluster.Get(cluster.coordinator_metrics(), "/metrics"), "loom_checkpoints_bad_total"), 1);
  // Attempt 3 redid steps 6..20 with attempt 1's losses.
  const auto first = Losses(cluster.work_dir("w1") + "/twostage-1/core#1/rank0/losses.txt");
  const auto third = Losses(cluster.work_dir("w1") + "/twostage-1/core#3/rank0/losses.txt");
  ASSERT_FALSE(third.empty());
  EXPECT_EQ(third.begin()->first, 6);
  for (int64_t step = 6; step <= 12; ++step) EXPECT_EQ(third.at(step), first.at(step)) << "step " << step;
}

// A rank that fails after the final checkpoint is committed (an evaluation at the very end, say)
// costs nothing: the job is SUCCEEDED on its first attempt and the next stage starts from that
// checkpoint. Before, every attempt resumed from the final checkpoint with nothing left to do,
// failed the same way, and the job ended FAILED.
TEST(Cluster, AFailureAfterTheFinalCheckpointIsCommittedStillSucceeds) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_CRASH_AFTER_FINAL=1", "LOOM_FAKE_CRASH_ATTEMPT=0"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(60));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  for (const auto& job : s.jobs()) {
    EXPECT_EQ(job.attempt(), 1) << job.stage();
    EXPECT_EQ(job.final_checkpoint().attempt(), 1) << job.stage();
    EXPECT_NE(job.reason().find("after it, "), std::string::npos) << job.reason();
  }
  EXPECT_NE(cluster.coordinator()->log().find("after its final checkpoint"), std::string::npos) << cluster.Logs();
}

// A worker that stalls past the heartbeat timeout (SIGSTOP here; a cut link or a swapping host
// alike) is declared lost while its stream is still open. The coordinator ends that stream, so when
// the worker wakes it reconnects: its stale rank of attempt 1 is aborted and the job, which had
// nowhere else to go, runs attempt 2 there. Before, the worker stayed LOST for good.
TEST(Cluster, AStalledWorkerIsLostThenRejoinsWhenItWakes) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=300"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).progress().step() >= 2; });
  ASSERT_EQ(kill(cluster.worker("w1")->pid(), SIGSTOP), 0);
  EXPECT_FALSE(cluster.coordinator()->WaitForLog("worker w1 lost: no heartbeat").empty()) << cluster.Logs();
  ASSERT_EQ(kill(cluster.worker("w1")->pid(), SIGCONT), 0);
  // It registers again, and its two ranks of attempt 1 (still running) are aborted.
  EXPECT_EQ(cluster.coordinator()->WaitForLog(R"(lost: no heartbeat[\s\S]*worker w1 registered \([^)]*, ([0-9]+) aborted\))"), "2")
      << cluster.Logs();
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(45));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).attempt(), 2);
  EXPECT_EQ(s.jobs(0).final_checkpoint().attempt(), 2);
  EXPECT_NE(cluster.worker("w1")->log().find("core#1/rank0: abort"), std::string::npos) << cluster.Logs();
  // Declared lost while it sent heartbeat datagrams: it cannot tell a stall from a blocked UDP
  // port, so it heartbeats on its stream from then on (and stayed alive so, as the plan shows).
  EXPECT_NE(cluster.worker("w1")->log().find("heartbeats go on the stream from now on"), std::string::npos)
      << cluster.Logs();
}

// A rank that is alive but makes no step (SIGSTOP here; a hung file system or a deadlock alike)
// while its worker heartbeats on: after max(10 x the median step time, the plan's 2 s floor)
// without a step the job is declared hung, the attempt's ranks are aborted (SIGKILL reaches a
// stopped process) and attempt 2 resumes from the last checkpoint. Before, it hung until someone
// looked.
TEST(Cluster, ARankThatMakesNoStepIsDetectedAndTheJobResumes) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(PlanWith(cluster, "hang: {step_time_factor: 10, min_seconds: 2}"));
  cluster.WaitForPlan(id, [](const PlanStatus& s) { return s.jobs(0).progress().step() >= 7; });
  const pid_t rank0 = FindProcess({"loom-fake-rank", "core#1/rank0"});
  ASSERT_GT(rank0, 0);
  ASSERT_EQ(kill(rank0, SIGSTOP), 0);
  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(60));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const loom::v1::JobStatus& core = s.jobs(0);
  EXPECT_EQ(core.attempt(), 2) << core.DebugString();
  EXPECT_EQ(core.last_failure().cause(), "hung") << core.DebugString();
  EXPECT_TRUE(HasTransition(core, loom::v1::JOB_STATE_RECOVERING, "cluster fault: no step progress")) << core.DebugString();
  EXPECT_NE(core.last_failure().message().find("no step for "), std::string::npos) << core.last_failure().message();
  EXPECT_NE(core.last_failure().message().find("the plan's hang policy allows 2.0 s"), std::string::npos)
      << core.last_failure().message();
  EXPECT_NE(core.last_failure().message().find("(median 0.1"), std::string::npos) << core.last_failure().message();
  // From the last checkpoint attempt 1 committed before the stop: step 5, or a later one when the
  // stop landed late on a busy machine (steps of 100 ms, a checkpoint every 5).
  EXPECT_EQ(core.resumed_from().rfind(cluster.checkpoint_root() + "/twostage-1/core/attempt-1/step-0000", 0), 0u)
      << core.resumed_from();
  EXPECT_TRUE(HasTransition(core, loom::v1::JOB_STATE_RECOVERING, "resumes from " + core.resumed_from()))
      << core.DebugString();
  EXPECT_EQ(MetricValue(cluster.Get(cluster.coordinator_metrics(), "/metrics"), "loom_attempt_failures_total",
                        "cause=\"hung\""),
            1);
}

// Where the coordinator cannot have its UDP port (another program holds it), it says so and does
// not offer heartbeat datagrams: workers heartbeat on their streams and stay alive.
TEST(Cluster, WithoutItsUdpPortTheCoordinatorKeepsWorkersAliveOnStreamHeartbeats) {
  Cluster cluster;
  const std::string address = cluster.address();
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1))));
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&at), sizeof(at)), 0) << std::strerror(errno);
  cluster.StartCoordinator();
  EXPECT_FALSE(cluster.coordinator()->WaitForLog("no heartbeat datagrams").empty()) << cluster.Logs();
  cluster.StartWorker("w1", 1);
  std::this_thread::sleep_for(std::chrono::seconds(5));  // the heartbeat timeout is 2 s
  EXPECT_TRUE(std::regex_search(cluster.Loom({"workers"}).out, std::regex(R"(w1\s+idle)"))) << cluster.Logs();
  EXPECT_EQ(cluster.coordinator()->log().find("lost"), std::string::npos) << cluster.Logs();
  close(fd);
}

// grpc.health.v1.Health/Check for the whole server: the response's bytes ("\x08\x01" SERVING,
// "\x08\x02" NOT_SERVING), or "" when the call failed.
std::string HealthCheck(const std::string& address) {
  return loom::testing::CheckHealth(address, grpc::InsecureChannelCredentials(), std::chrono::seconds(1)).bytes;
}

// SIGTERM (systemctl stop): the coordinator first reports NOT_SERVING on gRPC health, so that load
// balancers and probes stop sending, then shuts down and exits 0.
TEST(Cluster, ACoordinatorStoppedWithSigtermReportsNotServingBeforeItCloses) {
  Cluster cluster;
  cluster.StartCoordinator();
  ASSERT_EQ(HealthCheck(cluster.address()), std::string("\x08\x01"));
  ASSERT_EQ(kill(cluster.coordinator()->pid(), SIGTERM), 0);
  bool not_serving = false;
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
       !not_serving && std::chrono::steady_clock::now() < until;) {
    not_serving = HealthCheck(cluster.address()) == std::string("\x08\x02");
  }
  EXPECT_TRUE(not_serving) << cluster.Logs();
  const int status = cluster.coordinator()->Kill(0);  // reaps it
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(HealthCheck(cluster.address()), "");
}

TEST(Cluster, CoordinatorKilledAndRestartedLosesNothing) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  const PlanStatus before = cluster.WaitForPlan(id, [](const PlanStatus& s) {
    return s.jobs(0).last_checkpoint().step() >= 5 && s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING;
  });
  const CommandResult checkpoints_before = cluster.Loom({"checkpoints", id, "--json"});
  cluster.KillCoordinator(SIGKILL);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  cluster.StartCoordinator();
  const PlanStatus after = cluster.WaitForPlan(id, Ended, std::chrono::seconds(45));
  ASSERT_EQ(after.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(after.plan_id(), before.plan_id());
  EXPECT_EQ(after.submitted_ms(), before.submitted_ms());
  for (int j = 0; j < before.jobs_size(); ++j) {
    const auto& b = before.jobs(j);
    const auto& a = after.jobs(j);
    ASSERT_GE(a.transitions_size(), b.transitions_size());
    for (int t = 0; t < b.transitions_size(); ++t) {
      EXPECT_EQ(a.transitions(t).SerializeAsString(), b.transitions(t).SerializeAsString())
          << "job " << j << " transition " << t;
    }
  }
  // Re-adopted, not restarted: the running attempt survived the coordinator.
  EXPECT_EQ(after.jobs(0).attempt(), 1) << after.jobs(0).DebugString() << cluster.Logs();
  const CommandResult checkpoints_after = cluster.Loom({"checkpoints", id, "--json"});
  loom::v1::ListCheckpointsResponse b, a;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(checkpoints_before.out, &b).ok());
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(checkpoints_after.out, &a).ok());
  ASSERT_GE(b.checkpoints_size(), 1);
  for (const auto& c : b.checkpoints()) {
    bool found = false;
    int newer = 0;  // of its stage, still listed
    for (const auto& d : a.checkpoints()) {
      found |= d.SerializeAsString() == c.SerializeAsString();
      newer += d.stage() == c.stage() && d.step() > c.step();
    }
    // Listed as before, or retired by retention (keep_last 3) once three newer ones were committed
    // (and then gone from disk too).
    EXPECT_TRUE(found || (newer >= 3 && !std::filesystem::exists(c.path())))
        << "checkpoint lost across the restart: " << c.DebugString();
  }
}

TEST(Cluster, MalformedPlansAreRejectedWithEveryErrorAndTheCoordinatorStaysUp) {
  Cluster cluster;
  cluster.StartCoordinator();
  // Past the client's own validation, straight to the service.
  auto stub = loom::v1::PlanService::NewStub(
      grpc::CreateChannel(cluster.address(), grpc::InsecureChannelCredentials()));
  loom::v1::SubmitPlanRequest request;
  auto* plan = request.mutable_plan();
  plan->set_name("Bad Name");
  plan->mutable_model()->set_layers(2);
  plan->mutable_model()->set_d_model(64);
  plan->mutable_model()->set_heads(4);
  plan->mutable_model()->set_kv_heads(3);
  plan->mutable_model()->set_ffn_size(128);
  plan->mutable_model()->set_vocab_size(256);
  auto* stage = plan->add_stages();
  stage->set_name("core");
  stage->set_kind(loom::v1::STAGE_KIND_PRETRAIN);
  stage->set_tokens(1000);
  auto* sft = plan->add_stages();
  sft->set_name("sft");
  sft->set_kind(loom::v1::STAGE_KIND_SFT);
  sft->set_from("cor");
  request.set_source("broken.yaml");
  loom::v1::SubmitPlanResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const grpc::Status status = stub->SubmitPlan(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const std::string& m = status.error_message();
  EXPECT_NE(m.find("errors in broken.yaml"), std::string::npos) << m;
  EXPECT_NE(m.find("model.kv_heads"), std::string::npos) << m;
  EXPECT_NE(m.find("stages[1].from"), std::string::npos) << m;
  EXPECT_NE(m.find("name"), std::string::npos) << m;
  EXPECT_GE(std::count(m.begin(), m.end(), '\n'), 3) << m;
  // Still serving: the standard health check says SERVING, a valid plan is accepted and listed.
  EXPECT_TRUE(cluster.coordinator()->running());
  EXPECT_EQ(HealthCheck(cluster.address()), std::string("\x08\x01"));  // HealthCheckResponse{status: SERVING}
  EXPECT_EQ(cluster.Submit(kPlan), "twostage-1");
  CommandResult list = cluster.Loom({"status", "--json"});
  EXPECT_NE(list.out.find("twostage-1"), std::string::npos) << list.out;
  EXPECT_EQ(list.out.find("Bad Name"), std::string::npos);
  // The client refuses a broken file itself, with the same messages.
  const std::string broken = cluster.dir() + "/broken.yaml";
  std::ofstream(broken) << "name: broken\nstages: [{name: core, kind: pretrain, from: nowhere}]\n";
  CommandResult submit = cluster.Loom({"submit", broken});
  EXPECT_EQ(submit.exit_code, 1);
  EXPECT_NE(submit.err.find("stages[0]"), std::string::npos) << submit.err;
}

TEST(Cluster, RankFailuresAreRetriedUpToMaxAttemptsThenTheJobFails) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_CRASH_AT_STEP=3", "LOOM_FAKE_CRASH_ATTEMPT=0"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(PlanWith(cluster, "max_attempts: 2"));
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_FAILED);
  const auto& core = s.jobs(0);
  EXPECT_EQ(core.state(), loom::v1::JOB_STATE_FAILED);
  EXPECT_EQ(core.attempt(), 2);
  EXPECT_NE(core.reason().find("attempt 2 of 2 failed"), std::string::npos) << core.reason();
  EXPECT_NE(core.reason().find("fake rank: injected crash at step 3"), std::string::npos) << core.reason();
  EXPECT_NE(core.reason().find("exited with code 3"), std::string::npos) << core.reason();
  EXPECT_TRUE(HasTransition(core, loom::v1::JOB_STATE_RECOVERING, "attempt 1 failed"));
  EXPECT_EQ(s.jobs(1).state(), loom::v1::JOB_STATE_FAILED);
  EXPECT_NE(s.jobs(1).reason().find("stage 'core' failed"), std::string::npos) << s.jobs(1).reason();
  EXPECT_EQ(cluster.Loom({"watch", id}).exit_code, 1);
}

TEST(Cluster, CancelAbortsRunningRanks) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=200"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string id = cluster.Submit(kPlan);
  cluster.WaitForPlan(id,
                      [](const PlanStatus& s) { return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING; });
  EXPECT_EQ(cluster.Loom({"cancel", id}).exit_code, 0);
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_CANCELLED);
  // The ranks are gone within about a second and their slots are free again.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  std::string out;
  while (std::chrono::steady_clock::now() < until) {
    out = cluster.Loom({"workers", "--json"}).out;
    if (out.find("\"slots_used\"") == std::string::npos && out.find("IDLE") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(out.find("WORKER_STATE_IDLE"), std::string::npos) << out;
}

TEST(Cluster, LoomUpRunsAPlanAndStopsEverythingOnSigterm) {
  Cluster cluster;  // only for its directory, port and client
  // What the coordinator checks at submit for this plan (the fake rank reads none of it).
  const std::string prepared = cluster.dir() + "/up/prepared";
  for (const char* source : {"english", "code"}) std::filesystem::create_directories(prepared + "/" + source + "/train");
  std::ofstream(prepared + "/tokenizer.model") << "stand-in";
  Process up({LoomBinary(), "up", "--workers", "2", "--data-dir", cluster.dir() + "/up", "--listen",
              cluster.address(), "--metrics-listen", "127.0.0.1:0", "--rank-binary", FakeRankBinary()},
             cluster.dir() + "/up.log");
  ASSERT_FALSE(up.WaitForLog("loom up: coordinator on").empty()) << up.log();
  // `loom up` uses mutual TLS by default, with certificates in its data directory.
  cluster.SetClientTls(cluster.dir() + "/up/tls");
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  std::string id;
  while (id.empty() && std::chrono::steady_clock::now() < until) {
    CommandResult r = cluster.Loom({"submit", kPlan, "--quiet"});
    if (r.exit_code == 0)
      id = r.out.substr(0, r.out.find('\n'));
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(id, "twostage-1") << up.log();
  const PlanStatus s = cluster.WaitForPlan(id, Ended);
  EXPECT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << up.log();
  EXPECT_TRUE(
      std::filesystem::exists(cluster.dir() + "/up/checkpoints/twostage-1/more/attempt-1/step-000010/manifest.json"));
  CommandResult workers = cluster.Loom({"workers"});
  EXPECT_NE(workers.out.find("local-0"), std::string::npos) << workers.out;
  EXPECT_NE(workers.out.find("local-1"), std::string::npos) << workers.out;
  const auto start = std::chrono::steady_clock::now();
  const int status = up.Kill(SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << up.log();
  EXPECT_NE(up.log().find("loom up: stopping"), std::string::npos);
  // Everything it started is gone: the coordinator no longer answers.
  EXPECT_EQ(cluster.Loom({"status"}).exit_code, 1);
}

TEST(Cluster, UnreachableCoordinatorIsNamed) {
  Cluster cluster;  // never started
  CommandResult r = cluster.Loom({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach the coordinator at " + cluster.address()), std::string::npos) << r.err;
}

}  // namespace
}  // namespace loom::testing
