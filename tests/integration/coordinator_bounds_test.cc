// What a coordinator accepts and what it keeps, against a real loom-coordinator (and real
// loom-worker daemons with the fake rank), through the real `loom` client and raw gRPC:
//   - confined paths: a plan naming a path outside the coordinator's roots (/etc/passwd, or a
//     symlink inside a root that points out of it) is refused at submit, naming the field;
//   - plan retention: a plan that ended is forgotten after --plan-retention, and asking for it
//     says it expired, also after a restart.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

const std::string kPlan = SourcePath("tests/integration/two_stage_plan.yaml");

bool Ended(const loom::v1::PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// The two-stage plan with `data` as its data block, written to `path`.
std::string PlanWithData(const std::string& path, const std::string& data) {
  std::ofstream(path) << ReadAll(kPlan) << "data: " << data << "\n";
  return path;
}

TEST(ConfinedPaths, APlanNamingAPathOutsideTheRootsIsRefusedAtSubmitWithItsField) {
  Cluster cluster;
  cluster.StartCoordinator();

  // /etc/passwd as data, through `loom submit`.
  const std::string etc = PlanWithData(cluster.dir() + "/etc.yaml", "{dir: /etc, tokenizer: /etc/passwd}");
  CommandResult r = cluster.Loom({"submit", etc});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("data.dir: /etc is outside the coordinator's allowed roots"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("data.tokenizer: /etc/passwd is outside the coordinator's allowed roots"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--allowed-roots"), std::string::npos) << "the hint names the fix: " << r.err;

  // A symlink inside the cluster's directory (an allowed root) that points out of it, over raw
  // gRPC with the plan's text.
  std::filesystem::create_directory_symlink("/etc", cluster.dir() + "/data");
  std::filesystem::create_directories(cluster.dir() + "/prepared");
  auto stub = loom::v1::PlanService::NewStub(grpc::CreateChannel(cluster.address(), grpc::InsecureChannelCredentials()));
  loom::v1::SubmitPlanRequest request;
  request.set_plan_yaml(ReadAll(PlanWithData(cluster.dir() + "/link.yaml", "{dir: " + cluster.dir() + "/data}")));
  request.set_source("link.yaml");
  loom::v1::SubmitPlanResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::Status status = stub->SubmitPlan(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("data.dir: " + cluster.dir() + "/data (/etc) is outside"), std::string::npos)
      << status.error_message();

  // Nothing was stored; a plan that names nothing outside is accepted.
  EXPECT_NE(cluster.Loom({"status", "--all"}).out.find("no plans"), std::string::npos);
  r = cluster.Loom({"submit", kPlan, "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// --allow-any-path is the explicit opt-out: said at start, and /etc is then only checked for
// what it lacks (a tokenizer, shards), not refused for where it is.
TEST(ConfinedPaths, AllowAnyPathIsAnExplicitOptOutThatWarns) {
  Cluster cluster({.coordinator_args = {"--allow-any-path"}});
  cluster.StartCoordinator();
  EXPECT_NE(cluster.coordinator()->log().find("--allow-any-path: plan paths are not confined"), std::string::npos)
      << cluster.coordinator()->log();
  const CommandResult r =
      cluster.Loom({"submit", PlanWithData(cluster.dir() + "/etc.yaml", "{dir: /etc, tokenizer: /etc/passwd}")});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.err.find("outside the coordinator's allowed roots"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/etc/english/train does not exist"), std::string::npos) << r.err;
}

TEST(PlanRetention, APlanThatEndedIsForgottenAfterTheRetentionAndSaysItExpired) {
  Cluster cluster({.coordinator_args = {"--plan-retention", "2s"}});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  const std::string done = cluster.Submit(kPlan);
  const loom::v1::PlanStatus s = cluster.WaitForPlan(done, Ended);
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  const std::string final_checkpoint = s.jobs(1).final_checkpoint().path();
  // A plan that stays active (no worker has room for it once w1 is gone) is never forgotten.
  cluster.KillWorker("w1");
  const std::string live = cluster.Submit(kPlan);

  CommandResult r;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    r = cluster.Loom({"status", done});
    if (r.exit_code != 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_NE(r.exit_code, 0) << "plan " << done << " still there 20 s after it ended with a 2 s retention";
  EXPECT_NE(r.err.find("expired after retention"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--plan-retention"), std::string::npos) << r.err;
  const std::string plans = cluster.Loom({"status", "--all"}).out;
  EXPECT_EQ(plans.find(done), std::string::npos) << plans;
  EXPECT_NE(plans.find(live), std::string::npos) << plans;
  EXPECT_NE(cluster.Loom({"metrics", done}).exit_code, 0) << "its run history is gone";
  EXPECT_TRUE(std::filesystem::exists(final_checkpoint + "/manifest.json")) << "checkpoint files stay on disk";
  // Its metric series go with it (the gauges are refreshed every 0.5 s); the live plan's stay.
  std::string metrics;
  for (int i = 0; i < 50; ++i) {
    metrics = cluster.Get(cluster.coordinator_metrics(), "/metrics");
    if (metrics.find("plan=\"" + done + "\"") == std::string::npos && metrics.find("plan=\"" + live + "\"") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(metrics.find("plan=\"" + done + "\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("plan=\"" + live + "\""), std::string::npos) << metrics;

  // After a restart it is still gone, and still said to have expired.
  cluster.KillCoordinator();
  cluster.StartCoordinator();
  cluster.WaitForPlan(live, [](const loom::v1::PlanStatus&) { return true; }, std::chrono::seconds(15));
  r = cluster.Loom({"status", done});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("expired after retention"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace loom::testing
