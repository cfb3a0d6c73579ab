// Fencing with real processes (a TLS coordinator, a worker daemon, fake ranks): a worker speaks
// only for the ranks placed on it in its job's current attempt, and a rank reaches only its own
// attempt's rendezvous keys, with its attempt's secret, while the attempt runs.
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "common/tls.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace loom::testing {
namespace {

using loom::v1::PlanStatus;

bool Ended(const PlanStatus& s) { return s.state() != loom::v1::PLAN_STATE_ACTIVE; }

// One stage, `dp` ranks of the fake rank, 40 steps of 256 tokens, a checkpoint every 5.
std::string WritePlan(const Cluster& cluster, const std::string& name, int dp) {
  const std::string path = cluster.dir() + "/" + name + ".yaml";
  std::ofstream(path) << "name: " << name << R"(
model: {layers: 2, d_model: 64, heads: 4, kv_heads: 2, ffn_size: 128, vocab_size: 256, max_seq_len: 128}
stages:
  - name: core
    kind: pretrain
    tokens: 10240
    parallel: {dp: )" << dp << R"(, micro_batch_size: 1}
    optimizer: {lr: 1e-3}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 256}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 128}]
    data_mix: [{at_tokens: 0, weights: {english: 1}}]
    checkpoint: {every_steps: 5}
)";
  return path;
}

// loom_fenced_reports_total{reason="REASON"} on the coordinator's /metrics (0 when absent).
int64_t FencedReports(const Cluster& cluster, const std::string& reason) {
  const std::string text = HttpGet(cluster.coordinator_metrics(), "/metrics");
  std::smatch m;
  const std::regex re("loom_fenced_reports_total\\{reason=\"" + reason + "\"\\} ([0-9.e+]+)");
  return std::regex_search(text, m, re) ? static_cast<int64_t>(std::stod(m[1].str())) : 0;
}

std::shared_ptr<grpc::Channel> ChannelAs(const Cluster& cluster, const std::string& name) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = ClientCredentials(cluster.tls_dir(), name);
  EXPECT_TRUE(credentials.ok()) << credentials.status();
  return grpc::CreateChannel(cluster.address(), *credentials);
}

// A client holding worker w2's certificate opens its own Connect stream, as w2, and reports for
// the ranks the coordinator placed on w1: a failed rank exit, progress far ahead, and a final
// checkpoint (under the attempt's own directory, so only the worker check stops it). None of it
// is applied, each is counted, and the job goes on to succeed in its first attempt.
TEST(FencingCluster, AWorkerCannotReportForAnotherWorkersRanks) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100"}, .tls = true});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  cluster.Certs({"issue", "--dir", cluster.tls_dir(), "--role", "worker", "--name", "w2"});
  const std::string id = cluster.Submit(WritePlan(cluster, "victim", 2));
  const PlanStatus running = cluster.WaitForPlan(id, [](const PlanStatus& s) {
    return s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING && s.jobs(0).last_checkpoint().step() >= 5;
  });
  ASSERT_EQ(running.jobs(0).state(), loom::v1::JOB_STATE_RUNNING) << cluster.Logs();
  const loom::v1::JobStatus& job = running.jobs(0);
  ASSERT_EQ(job.rank_workers_size(), 2);
  ASSERT_EQ(job.rank_workers(0), "w1");
  const std::string attempt_dir = std::filesystem::path(job.last_checkpoint().path()).parent_path().string();

  auto stub = loom::v1::WorkerService::NewStub(ChannelAs(cluster, "w2"));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  std::unique_ptr<grpc::ClientReaderWriter<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage>> stream =
      stub->Connect(&context);
  loom::v1::WorkerMessage reg;
  reg.mutable_register_()->set_worker_id("w2");
  reg.mutable_register_()->set_host("forger");
  reg.mutable_register_()->add_devices()->set_kind(loom::v1::Device::KIND_CPU);
  reg.mutable_register_()->set_storage_token(ReadAll(cluster.checkpoint_root() + "/.loom-storage-token"));
  ASSERT_TRUE(stream->Write(reg));
  loom::v1::CoordinatorMessage ack;
  ASSERT_TRUE(stream->Read(&ack));
  ASSERT_TRUE(ack.has_registered()) << ack.DebugString();
  loom::v1::WorkerMessage draining;  // take no work
  draining.mutable_draining()->set_reason("forger");
  ASSERT_TRUE(stream->Write(draining));

  loom::v1::RankRef w1_rank;
  w1_rank.set_job_id(job.job_id());
  w1_rank.set_attempt(job.attempt());
  w1_rank.set_rank(0);
  loom::v1::WorkerMessage exit;
  *exit.mutable_rank_exit()->mutable_rank() = w1_rank;
  exit.mutable_rank_exit()->set_exit_code(3);
  exit.mutable_rank_exit()->set_error("forged crash");
  loom::v1::WorkerMessage progress;
  *progress.mutable_progress()->mutable_rank() = w1_rank;
  progress.mutable_progress()->set_step(99999);
  loom::v1::WorkerMessage commit;
  for (int shard = 0; shard < 2; ++shard) {
    commit.Clear();
    *commit.mutable_checkpoint()->mutable_rank() = w1_rank;
    commit.mutable_checkpoint()->mutable_rank()->set_rank(shard);
    commit.mutable_checkpoint()->set_step(99999);
    commit.mutable_checkpoint()->set_path(attempt_dir + "/forged");
    commit.mutable_checkpoint()->set_num_shards(2);
    commit.mutable_checkpoint()->set_shard(shard);
    commit.mutable_checkpoint()->set_final(true);
    ASSERT_TRUE(stream->Write(commit));
  }
  ASSERT_TRUE(stream->Write(progress));
  ASSERT_TRUE(stream->Write(exit));

  // Four reports refused as w1's ranks' (two checkpoint shards, progress, the exit), and said so.
  for (int i = 0; i < 200 && FencedReports(cluster, "wrong_worker") < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(FencedReports(cluster, "wrong_worker"), 4) << HttpGet(cluster.coordinator_metrics(), "/metrics");
  EXPECT_FALSE(
      cluster.coordinator()
          ->WaitForLog("refused a rank exit from worker w2 for job " + job.job_id() + " attempt 1 rank 0: wrong_worker")
          .empty())
      << cluster.coordinator()->log();
  stream->WritesDone();
  context.TryCancel();

  PlanStatus after;
  ASSERT_TRUE(cluster.Status(id, &after));
  EXPECT_EQ(after.jobs(0).attempt(), 1) << after.DebugString();
  EXPECT_FALSE(after.jobs(0).has_last_failure()) << after.DebugString();
  EXPECT_LT(after.jobs(0).progress().step(), 99999);
  EXPECT_FALSE(after.jobs(0).has_final_checkpoint()) << after.DebugString();

  const PlanStatus s = cluster.WaitForPlan(id, Ended, std::chrono::seconds(30));
  ASSERT_EQ(s.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(s.jobs(0).attempt(), 1);
  EXPECT_EQ(s.jobs(0).final_checkpoint().step(), 40);
  EXPECT_EQ(s.jobs(0).final_checkpoint().path().find("forged"), std::string::npos);
  CommandResult checkpoints = cluster.Loom({"checkpoints", id});
  EXPECT_EQ(checkpoints.out.find("forged"), std::string::npos) << checkpoints.out;
  EXPECT_EQ(checkpoints.out.find("99999"), std::string::npos) << checkpoints.out;
}

// The attempt's prefix and secret from the assignment file the worker wrote for a rank.
struct AttemptAccess {
  std::string prefix, secret;
};

std::map<std::string, AttemptAccess> ReadAssignments(const std::string& work_dir) {
  std::map<std::string, AttemptAccess> by_attempt;  // "<job>#<attempt>"
  for (const auto& entry : std::filesystem::recursive_directory_iterator(work_dir)) {
    if (entry.path().filename() != "assignment.pb") continue;
    EXPECT_EQ(std::filesystem::status(entry.path()).permissions() &
                  (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
              std::filesystem::perms::none)
        << entry.path() << " holds a secret: it must be the worker user's alone";
    loom::v1::Assignment a;
    EXPECT_TRUE(a.ParseFromString(ReadAll(entry.path().string())));
    by_attempt[a.rank().job_id() + "#" + std::to_string(a.rank().attempt())] = {a.rendezvous_prefix(),
                                                                                a.rendezvous_secret()};
  }
  return by_attempt;
}

class Rendezvous {
 public:
  explicit Rendezvous(std::shared_ptr<grpc::Channel> channel) : stub_(loom::v1::RendezvousService::NewStub(channel)) {}
  // Get of `key` as `who`: the status code, and the value in *value.
  grpc::StatusCode Get(const AttemptAccess& who, const std::string& key, std::string* value = nullptr) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    loom::v1::RendezvousGetRequest r;
    r.add_keys(key);
    r.mutable_attempt()->set_prefix(who.prefix);
    r.mutable_attempt()->set_secret(who.secret);
    loom::v1::RendezvousGetResponse out;
    const grpc::Status s = stub_->Get(&c, r, &out);
    if (s.ok() && value != nullptr) *value = out.values(0);
    return s.error_code();
  }
  grpc::StatusCode Set(const AttemptAccess& who, const std::string& key, const std::string& value) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    loom::v1::RendezvousSetRequest r;
    r.set_key(key);
    r.set_value(value);
    r.mutable_attempt()->set_prefix(who.prefix);
    r.mutable_attempt()->set_secret(who.secret);
    loom::v1::RendezvousSetResponse out;
    return stub_->Set(&c, r, &out).error_code();
  }

 private:
  std::unique_ptr<loom::v1::RendezvousService::Stub> stub_;
};

// Two plans side by side on one worker; each first attempt crashes at step 3 and is retried.
// With a rank certificate: each attempt reads and writes its own keys, never the other's, nor
// with the other's secret, nor with none; and an attempt's keys and secret are gone when it ends,
// by failure (attempt 1 of each), cancel (plan A) and success (plan B).
TEST(FencingCluster, ARankReachesOnlyItsOwnAttemptsRendezvousKeysWhileItRuns) {
  Cluster cluster({.worker_env = {"LOOM_FAKE_STEP_MS=100", "LOOM_FAKE_CRASH_AT_STEP=3", "LOOM_FAKE_CRASH_ATTEMPT=1"},
                   .tls = true});
  cluster.StartCoordinator();
  cluster.StartWorker("w1", 2);
  cluster.Certs({"issue", "--dir", cluster.tls_dir(), "--role", "rank", "--name", "r1"});
  const std::string a = cluster.Submit(WritePlan(cluster, "alpha", 1));
  const std::string b = cluster.Submit(WritePlan(cluster, "beta", 1));
  auto second_attempt_runs = [](const PlanStatus& s) {
    return s.jobs(0).attempt() == 2 && s.jobs(0).state() == loom::v1::JOB_STATE_RUNNING;
  };
  const PlanStatus sa = cluster.WaitForPlan(a, second_attempt_runs);
  const PlanStatus sb = cluster.WaitForPlan(b, second_attempt_runs);
  ASSERT_TRUE(second_attempt_runs(sa) && second_attempt_runs(sb)) << cluster.Logs();
  const std::string ja = sa.jobs(0).job_id(), jb = sb.jobs(0).job_id();

  std::map<std::string, AttemptAccess> attempts = ReadAssignments(cluster.work_dir("w1"));
  ASSERT_EQ(attempts.size(), 4u);
  const AttemptAccess a1 = attempts[ja + "#1"], a2 = attempts[ja + "#2"], b2 = attempts[jb + "#2"];
  ASSERT_EQ(a2.prefix, ja + "#2/");
  ASSERT_EQ(a2.secret.size(), 32u);
  EXPECT_NE(a1.secret, a2.secret);
  EXPECT_NE(a2.secret, b2.secret);

  Rendezvous rendezvous(ChannelAs(cluster, "r1"));
  // Its own: the write lease the coordinator granted, and a key of its own.
  std::string lease;
  EXPECT_EQ(rendezvous.Get(a2, a2.prefix + "/lease", &lease), grpc::StatusCode::OK);
  EXPECT_EQ(lease, "1");
  EXPECT_EQ(rendezvous.Set(a2, a2.prefix + "/addr", "a"), grpc::StatusCode::OK);
  EXPECT_EQ(rendezvous.Set(b2, b2.prefix + "/addr", "b"), grpc::StatusCode::OK);
  // The other attempt's keys, with its own secret, with the other's secret, with none.
  EXPECT_EQ(rendezvous.Get(a2, b2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Set(a2, b2.prefix + "/addr", "forged"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Get({b2.prefix, a2.secret}, b2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Set({b2.prefix, a2.secret}, b2.prefix + "/lease", "forged"),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Get({b2.prefix, ""}, b2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Get({"", ""}, b2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  std::string value;
  EXPECT_EQ(rendezvous.Get(b2, b2.prefix + "/addr", &value), grpc::StatusCode::OK);
  EXPECT_EQ(value, "b");
  // The failed first attempt: its secret opens nothing, its own lease included.
  EXPECT_EQ(rendezvous.Get(a1, a1.prefix + "/lease"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Set(a1, a1.prefix + "/addr", "late"), grpc::StatusCode::PERMISSION_DENIED);

  // Cancelled: attempt 2 of A is closed; B's is untouched.
  CommandResult cancel = cluster.Loom({"cancel", a});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_EQ(rendezvous.Get(a2, a2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Get(b2, b2.prefix + "/addr"), grpc::StatusCode::OK);

  // Succeeded: closed too.
  const PlanStatus done = cluster.WaitForPlan(b, Ended, std::chrono::seconds(30));
  ASSERT_EQ(done.state(), loom::v1::PLAN_STATE_SUCCEEDED) << cluster.Logs();
  EXPECT_EQ(rendezvous.Get(b2, b2.prefix + "/lease"), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(rendezvous.Get(b2, b2.prefix + "/addr"), grpc::StatusCode::PERMISSION_DENIED);
  // No secret in the coordinator's log.
  const std::string log = cluster.coordinator()->log();
  for (const AttemptAccess* x : {&a1, &a2, &b2}) EXPECT_EQ(log.find(x->secret), std::string::npos);
}

}  // namespace
}  // namespace loom::testing
