// The coordinator's logic driven by events with an injected clock: no gRPC, no processes.
#include "coordinator/coordinator.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "absl/strings/str_format.h"
#include "common/plan_io.h"
#include "common/rank_exit.h"
#include "common/plan_resolve.h"
#include "common/plan_validation.h"
#include "coordinator/service.h"
#include "google/protobuf/util/message_differencer.h"

namespace loom::coordinator {
namespace {

using namespace loom::v1;

class FakeLink : public WorkerLink {
 public:
  bool Send(const CoordinatorMessage& m) override {
    messages.push_back(m);
    return true;
  }
  void End() override { ++ended; }
  std::vector<Assignment> TakeAssignments() {
    std::vector<Assignment> out;
    for (const auto& m : messages) {
      if (m.has_assign()) out.push_back(m.assign());
    }
    messages.clear();
    return out;
  }
  int Aborts() const {
    int n = 0;
    for (const auto& m : messages) n += m.has_abort();
    return n;
  }
  std::vector<CoordinatorMessage> messages;
  int ended = 0;
};

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/coordinator_test_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    Open();
    absl::StatusOr<TrainingPlan> plan =
        LoadPlan(std::string(LOOM_SOURCE_DIR) + "/tests/integration/two_stage_plan.yaml");
    ASSERT_TRUE(plan.ok()) << plan.status();
    plan_ = *plan;
  }
  void Open() {
    coordinator_.reset();
    store_.reset();
    store_ = std::move(*Store::Open(dir_));
    CoordinatorOptions o;
    o.checkpoint_root = checkpoint_root_;
    o.prepared_data = prepared_data_;
    o.jitter = [this] { return jitter_; };
    o.heartbeat_timeout = absl::Seconds(5);
    o.adopt_grace = absl::Seconds(10);
    o.plan_retention = plan_retention_;
    o.allowed_roots = allowed_roots_;
    coordinator_ = std::move(*Coordinator::Create(store_.get(), o, [this] { return now_; }));
  }
  int64_t Register(const std::string& id, FakeLink* link, int slots, std::vector<RankRef> running = {}) {
    RegisterWorker r;
    r.set_worker_id(id);
    for (int i = 0; i < slots; ++i) r.add_devices()->set_index(i);
    for (const auto& rr : running) *r.add_running() = rr;
    auto shared = std::shared_ptr<WorkerLink>(link, [](WorkerLink*) {});
    return *coordinator_->RegisterWorker(r, shared);
  }
  void Progress(const std::string& w, int64_t conn, const Assignment& a, int64_t step) {
    WorkerMessage m;
    *m.mutable_progress()->mutable_rank() = a.rank();
    m.mutable_progress()->set_step(step);
    m.mutable_progress()->set_tokens(step * 256);
    coordinator_->HandleWorkerMessage(w, conn, m);
  }
  void Checkpoint(const std::string& w, int64_t conn, const Assignment& a, int64_t step, bool final) {
    WorkerMessage m;
    CheckpointReport* r = m.mutable_checkpoint();
    *r->mutable_rank() = a.rank();
    r->set_step(step);
    r->set_path(a.checkpoint_dir() + "/step-" + std::to_string(step));
    r->set_num_shards(a.layout().world_size());
    r->set_shard(a.rank().rank());
    r->set_final(final);
    coordinator_->HandleWorkerMessage(w, conn, m);
  }
  void Exit(const std::string& w, int64_t conn, const Assignment& a, int code,
            const std::string& error = "") {
    WorkerMessage m;
    *m.mutable_rank_exit()->mutable_rank() = a.rank();
    m.mutable_rank_exit()->set_exit_code(code);
    m.mutable_rank_exit()->set_error(error);
    coordinator_->HandleWorkerMessage(w, conn, m);
  }
  // Every rank of attempt `a` trains, commits a checkpoint at each of `steps` (the last one final)
  // and exits 0.
  void Finish(const std::string& w, int64_t conn, const std::vector<Assignment>& a,
              const std::vector<int64_t>& steps) {
    for (const auto& rank : a) Progress(w, conn, rank, 1);
    for (size_t k = 0; k < steps.size(); ++k) {
      for (const auto& rank : a) Checkpoint(w, conn, rank, steps[k], k + 1 == steps.size());
    }
    for (const auto& rank : a) Exit(w, conn, rank, 0);
  }
  // Worker w1 (2 slots, on `link`) gets the first stage's two ranks, which train and commit their
  // final checkpoint (step 10) but do not exit.
  void CommitFinalCheckpointOfTheFirstStage(FakeLink* link) {
    const int64_t conn = Register("w1", link, 2);
    coordinator_->Tick();
    const std::vector<Assignment> a = link->TakeAssignments();
    ASSERT_EQ(a.size(), 2u);
    for (const auto& rank : a) Progress("w1", conn, rank, 1);
    for (const auto& rank : a) Checkpoint("w1", conn, rank, 10, /*final=*/true);
  }
  // Submits `plan`, registers w1 (2 slots, on `link`) and places the first stage's two ranks,
  // which report step 1.
  std::vector<Assignment> PlaceFirstStage(const TrainingPlan& plan, FakeLink* link, int64_t* conn, std::string* id) {
    *id = *coordinator_->SubmitPlan(plan, "plan.yaml");
    *conn = Register("w1", link, 2);
    coordinator_->Tick();
    std::vector<Assignment> a = link->TakeAssignments();
    EXPECT_EQ(a.size(), 2u);
    for (const auto& rank : a) Progress("w1", *conn, rank, 1);
    return a;
  }
  // Rank 0's assignment of each job, by stage.
  static std::map<std::string, Assignment> ByStage(const std::vector<Assignment>& a) {
    std::map<std::string, Assignment> out;
    for (const Assignment& x : a) {
      if (x.rank().rank() == 0) out[x.stage().name()] = x;
    }
    return out;
  }
  JobStatus Job(const std::string& plan_id, int index) {
    return coordinator_->GetPlan(plan_id)->status().jobs(index);
  }

  std::string dir_;
  std::string prepared_data_;  // the coordinator's --prepared-data
  std::string checkpoint_root_ = "/ckpt";  // a name only, unless a test makes it a directory
  double jitter_ = 1.0;        // every backoff its longest
  absl::Duration plan_retention_ = absl::ZeroDuration();  // plans kept forever
  std::vector<std::string> allowed_roots_;  // none: paths not confined
  int64_t now_ = 1'000'000;
  TrainingPlan plan_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Coordinator> coordinator_;
};

TEST_F(CoordinatorTest, AssignmentsCarryTheResolvedAllowedRootsForTheRanksToConfineTheirReads) {
  // Without roots (--allow-any-path) the ranks read unconfined.
  const std::string first = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink unconfined;
  Register("w0", &unconfined, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = unconfined.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].read_roots_size(), 0);
  ASSERT_TRUE(coordinator_->CancelPlan(first, "next: with roots").ok());

  // A root named through a symlink travels resolved, as the ranks compare it with the real paths
  // of the files they opened.
  const std::string real = dir_ + "-roots/real";
  std::filesystem::create_directories(real);
  std::filesystem::create_directory_symlink(real, dir_ + "-roots/alias");
  allowed_roots_ = {dir_ + "-roots/alias", "/srv/data"};
  Open();
  coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink link;
  Register("w1", &link, 2);
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(std::vector<std::string>(a[1].read_roots().begin(), a[1].read_roots().end()),
            (std::vector<std::string>{std::filesystem::canonical(real).string(), "/srv/data"}));
  std::filesystem::remove_all(dir_ + "-roots");
}

TEST_F(CoordinatorTest, RunsStagesInOrderAndHandsOverTheFinalCheckpoint) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  EXPECT_EQ(id, "twostage-1");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);  // core's two ranks; "more" waits for core
  EXPECT_EQ(Job(id, 1).reason(), "waiting for stage core to finish");
  EXPECT_EQ(a[1].rank().rank(), 1);
  EXPECT_EQ(a[1].layout().dp_rank(), 1);
  EXPECT_EQ(a[1].layout().world_size(), 2);
  EXPECT_EQ(a[0].rendezvous_prefix(), "twostage-1/core#1/");
  EXPECT_EQ(a[0].checkpoint_dir(), "/ckpt/twostage-1/core/attempt-1");
  EXPECT_EQ(a[0].cache_dir(), "/ckpt/twostage-1/core");
  EXPECT_EQ(a[0].seed(), StageSeed(7, "core"));
  EXPECT_TRUE(a[0].resume_from().empty());
  EXPECT_NE(a[0].device_index(), a[1].device_index());
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_SCHEDULED);
  Progress("w1", conn, a[0], 1);
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_SCHEDULED);  // until every rank trains
  Progress("w1", conn, a[1], 1);
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_RUNNING);
  Checkpoint("w1", conn, a[0], 5, false);
  EXPECT_FALSE(Job(id, 0).has_last_checkpoint());  // one shard of two
  Checkpoint("w1", conn, a[1], 5, false);
  EXPECT_EQ(Job(id, 0).last_checkpoint().step(), 5);
  Checkpoint("w1", conn, a[0], 20, true);
  Checkpoint("w1", conn, a[1], 20, true);
  Exit("w1", conn, a[0], 0);
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_RUNNING);
  Exit("w1", conn, a[1], 0);
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_SUCCEEDED);
  coordinator_->Tick();
  std::vector<Assignment> b = link.TakeAssignments();
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].stage().name(), "more");
  EXPECT_EQ(b[0].inputs().from(), "/ckpt/twostage-1/core/attempt-1/step-20");
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 2);
}

// A plan sent with a repeat block unexpanded is expanded on submit; every round's stage is a job
// that carries its round, in order.
TEST_F(CoordinatorTest, RepeatBlocksBecomeJobsThatCarryTheirRound) {
  loom::v1::TrainingPlan plan = plan_;
  loom::v1::Stage more = plan.stages(1);
  plan.mutable_stages()->RemoveLast();
  loom::v1::Stage* block = plan.add_stages();
  block->set_name("rounds");
  block->mutable_repeat()->set_times(2);
  more.set_from("more");  // each round continues from the previous one's model
  (*block->mutable_repeat()->mutable_initial())["more"] = "core";
  *block->mutable_repeat()->add_stages() = more;
  const std::string id = *coordinator_->SubmitPlan(plan, "plan.yaml");
  const auto record = coordinator_->GetPlan(id);
  ASSERT_TRUE(record.ok()) << record.status();
  const auto& jobs = record->status().jobs();
  ASSERT_EQ(jobs.size(), 3);
  EXPECT_EQ(jobs[1].stage(), "more.r1");
  EXPECT_EQ(jobs[1].round(), 1);
  EXPECT_EQ(jobs[2].stage(), "more.r2");
  EXPECT_EQ(jobs[2].round(), 2);
  EXPECT_EQ(jobs[0].round(), 0);
}

// An eval stage produces measurements, not a checkpoint: it succeeds when its ranks exit 0 and
// keeps what rank 0 reported; a training stage whose ranks exit 0 without a final checkpoint fails.
TEST_F(CoordinatorTest, EvalStageSucceedsWithoutACheckpointAndKeepsItsResults) {
  Stage* eval = plan_.add_stages();
  eval->set_name("measure");
  eval->set_kind(STAGE_KIND_EVAL);
  eval->set_from("more");
  eval->mutable_eval()->add_sets("english");
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  for (int stage = 0; stage < 2; ++stage) {
    coordinator_->Tick();
    std::vector<Assignment> a = link.TakeAssignments();
    ASSERT_EQ(a.size(), 2u);
    for (const auto& rank : a) Progress("w1", conn, rank, 1);
    for (const auto& rank : a) Checkpoint("w1", conn, rank, 10, true);
    for (const auto& rank : a) Exit("w1", conn, rank, 0);
    ASSERT_EQ(Job(id, stage).state(), JOB_STATE_SUCCEEDED) << Job(id, stage).DebugString();
  }
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].stage().kind(), STAGE_KIND_EVAL);
  EXPECT_EQ(a[0].inputs().from(), "/ckpt/twostage-1/more/attempt-1/step-10");
  WorkerMessage m;
  *m.mutable_progress()->mutable_rank() = a[0].rank();
  (*m.mutable_progress()->mutable_eval_loss())["english"] = 2.5;
  (*m.mutable_progress()->mutable_eval_metrics())["sft_math/accuracy"] = 0.25;
  coordinator_->HandleWorkerMessage("w1", conn, m);
  Progress("w1", conn, a[1], 0);
  Exit("w1", conn, a[1], 0);
  Exit("w1", conn, a[0], 0);
  const JobStatus job = Job(id, 2);
  EXPECT_EQ(job.state(), JOB_STATE_SUCCEEDED) << job.DebugString();
  EXPECT_FALSE(job.has_final_checkpoint());
  EXPECT_EQ(job.eval_loss().at("english"), 2.5);
  EXPECT_EQ(job.eval_metrics().at("sft_math/accuracy"), 0.25);
  EXPECT_EQ(coordinator_->GetPlan(id)->status().state(), PLAN_STATE_SUCCEEDED);
}

TEST_F(CoordinatorTest, TrainingRanksExitingWithoutAFinalCheckpointFailTheAttempt) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  for (const auto& rank : a) Progress("w1", conn, rank, 1);
  for (const auto& rank : a) Exit("w1", conn, rank, 0);
  const JobStatus job = Job(id, 0);
  EXPECT_NE(job.state(), JOB_STATE_SUCCEEDED) << job.DebugString();
  bool said = false;
  for (const auto& t : job.transitions()) {
    said |= t.reason().find("without a committed final checkpoint") != std::string::npos;
  }
  EXPECT_TRUE(said) << job.DebugString();
}

// Once the final checkpoint is committed the job has its result: a worker lost before its ranks
// exit, or ranks never re-adopted after a coordinator restart, leave it SUCCEEDED on attempt 1.
// Before, the next attempt resumed from the final checkpoint with no step left, wrote nothing, and
// failed "without a committed final checkpoint" until the job was FAILED.
TEST_F(CoordinatorTest, AWorkerLostAfterTheFinalCommitLeavesTheJobSucceeded) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  CommitFinalCheckpointOfTheFirstStage(&link);
  now_ += 6000;  // past the 5 s heartbeat timeout, before any rank exited
  coordinator_->Tick();
  const JobStatus job = Job(id, 0);
  EXPECT_EQ(job.state(), JOB_STATE_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_NE(job.reason().find("after it, cluster fault: worker lost (worker w1 lost"), std::string::npos) << job.reason();
}

TEST_F(CoordinatorTest, RanksNotReadoptedAfterARestartFollowingTheFinalCommitLeaveTheJobSucceeded) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  {
    FakeLink link;
    CommitFinalCheckpointOfTheFirstStage(&link);
  }
  Open();  // the coordinator restarts; no worker comes back within the adoption grace
  now_ += 11'000;
  coordinator_->Tick();
  const JobStatus job = Job(id, 0);
  EXPECT_EQ(job.state(), JOB_STATE_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(Job(id, 1).state(), JOB_STATE_PENDING) << "the next stage waits for slots, not for this one";
}

// An attempt that finds the checkpoint it resumes from corrupt (exit 65) retires it: it is listed
// as bad, the job resumes at once from the newest good checkpoint (outside the retry budget), and
// never from the bad one again; with no good one left it starts afresh.
TEST_F(CoordinatorTest, ABadCheckpointIsRetiredAndTheJobFallsBackToThePreviousGoodOne) {
  plan_.mutable_retry()->set_max_retries(1);  // the fallbacks must not spend it
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  for (const auto& rank : a) Progress("w1", conn, rank, 1);
  for (int64_t step : {5, 10}) {
    for (const auto& rank : a) Checkpoint("w1", conn, rank, step, false);
  }
  Exit("w1", conn, a[0], 1, "killed");  // attempt 1 fails: resume from step 10
  Exit("w1", conn, a[1], kRankExitTransient, "aborted");
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-10");
  Exit("w1", conn, a[0], kRankExitResumeCheckpointBad, "model.safetensors: sha256 mismatch");
  Exit("w1", conn, a[1], kRankExitResumeCheckpointBad, "model.safetensors: sha256 mismatch");
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u) << Job(id, 0).DebugString();
  EXPECT_EQ(a[0].rank().attempt(), 3);
  EXPECT_EQ(a[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-5");
  const auto listed = coordinator_->ListCheckpoints(id, "");
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->checkpoints_size(), 2);
  EXPECT_EQ(listed->checkpoints(0).bad(), "");
  EXPECT_NE(listed->checkpoints(1).bad().find("sha256 mismatch"), std::string::npos);
  EXPECT_EQ(Job(id, 0).last_failure().cause(), "checkpoint_bad") << Job(id, 0).DebugString();
  // The mark survives a restart; the last good one too is found bad: a fresh start.
  Exit("w1", conn, a[0], kRankExitResumeCheckpointBad, "manifest.json: no such file");
  Exit("w1", conn, a[1], kRankExitResumeCheckpointBad, "manifest.json: no such file");
  EXPECT_EQ(coordinator_->Metrics().checkpoints_bad, 2);
  Open();
  Register("w1", &link, 2);
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u) << Job(id, 0).DebugString();
  EXPECT_EQ(a[0].rank().attempt(), 4);
  EXPECT_EQ(a[0].resume_from(), "");
  const auto after_restart = coordinator_->ListCheckpoints(id, "");
  ASSERT_TRUE(after_restart.ok());
  EXPECT_FALSE(after_restart->checkpoints(0).bad().empty());
  EXPECT_FALSE(after_restart->checkpoints(1).bad().empty());
}

TEST_F(CoordinatorTest, LostWorkerMeansRecoveringThenANewAttemptFromTheLastCheckpoint) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink l1, l2;
  const int64_t c1 = Register("w1", &l1, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = l1.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  const int64_t c2 = Register("w2", &l2, 2);
  Checkpoint("w1", c1, a[0], 5, false);
  Checkpoint("w1", c1, a[1], 5, false);
  // w2 keeps heartbeating, w1 goes silent past the timeout.
  now_ += 6000;
  WorkerMessage hb;
  hb.mutable_heartbeat();
  coordinator_->HandleWorkerMessage("w2", c2, hb);
  coordinator_->Tick();
  JobStatus core = Job(id, 0);
  EXPECT_EQ(core.attempt(), 2);
  EXPECT_EQ(core.state(), JOB_STATE_SCHEDULED);
  bool recovering = false;
  for (const auto& t : core.transitions()) {
    recovering |= t.to_state() == JOB_STATE_RECOVERING && t.attempt() == 1 &&
                  t.reason().find("worker w1 lost (no heartbeat") != std::string::npos;
  }
  EXPECT_TRUE(recovering) << core.DebugString();
  std::vector<Assignment> b = l2.TakeAssignments();
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].rank().attempt(), 2);
  EXPECT_EQ(b[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-5");
  EXPECT_EQ(b[0].rendezvous_prefix(), "twostage-1/core#2/");
  EXPECT_EQ(core.resumed_from(), "/ckpt/twostage-1/core/attempt-1/step-5");
  // Late reports of the old attempt change nothing.
  Checkpoint("w1", c1, a[0], 10, false);
  EXPECT_EQ(Job(id, 0).last_checkpoint().step(), 5);
  // The lost worker's stream (connection c1) is stale now, and the coordinator ended it, so that
  // the worker (stalled, or behind a cut link) reconnects when it can; w2's stream stays.
  EXPECT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_LOST);
  EXPECT_EQ(l1.ended, 1);
  EXPECT_EQ(l2.ended, 0);
  // A worker that says it leaves keeps its stream: the exits of its stopping ranks still count.
  WorkerMessage leave;
  leave.mutable_leave()->set_reason("the worker is stopping (SIGTERM)");
  coordinator_->HandleWorkerMessage("w2", c2, leave);
  EXPECT_EQ(l2.ended, 0);
}

TEST_F(CoordinatorTest, FailedRanksAreRetriedThenTheJobAndItsDependentsFail) {
  plan_.set_max_attempts(2);
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    coordinator_->Tick();
    std::vector<Assignment> a = link.TakeAssignments();
    ASSERT_EQ(a.size(), 2u) << "attempt " << attempt;
    EXPECT_EQ(a[0].rank().attempt(), attempt);
    Exit("w1", conn, a[1], 3, "out of memory in attempt " + std::to_string(attempt));
    EXPECT_GE(link.Aborts(), 1);  // the other rank is told to stop
    // The surviving rank's exit after the abort is not another failure.
    Exit("w1", conn, a[0], -15);
    link.messages.clear();
  }
  const JobStatus core = Job(id, 0);
  EXPECT_EQ(core.state(), JOB_STATE_FAILED);
  EXPECT_EQ(core.reason(),
            "attempt 2 of 2 failed (cluster fault: rank crashed): rank 1 on w1 exited with code 3: out of memory "
            "in attempt 2");
  EXPECT_EQ(Job(id, 1).state(), JOB_STATE_FAILED);
  EXPECT_EQ(coordinator_->GetPlan(id)->status().state(), PLAN_STATE_FAILED);
}

TEST_F(CoordinatorTest, RestartReadoptsRanksThatWorkersReportOrReschedulesAfterTheGrace) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  Progress("w1", conn, a[0], 1);
  Progress("w1", conn, a[1], 1);
  Checkpoint("w1", conn, a[0], 5, false);
  Checkpoint("w1", conn, a[1], 5, false);
  const loom::v1::PlanStatus before = coordinator_->GetPlan(id)->status();

  Open();  // a new coordinator process on the same store
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(coordinator_->GetPlan(id)->status(), before))
      << coordinator_->GetPlan(id)->status().DebugString() << "\nbefore:\n" << before.DebugString();
  FakeLink again;
  conn = Register("w1", &again, 2, {a[0].rank(), a[1].rank()});
  coordinator_->Tick();
  EXPECT_TRUE(again.TakeAssignments().empty());  // re-adopted, nothing restarted
  EXPECT_EQ(Job(id, 0).attempt(), 1);
  Checkpoint("w1", conn, a[0], 20, true);
  Checkpoint("w1", conn, a[1], 20, true);
  Exit("w1", conn, a[0], 0);
  Exit("w1", conn, a[1], 0);
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_SUCCEEDED);
  EXPECT_EQ(Job(id, 0).attempt(), 1);

  // Stage 2 runs; the coordinator restarts and its worker never comes back.
  coordinator_->Tick();
  std::vector<Assignment> b = again.TakeAssignments();
  ASSERT_EQ(b.size(), 2u);
  Open();
  FakeLink other;
  const int64_t c2 = Register("w2", &other, 2);
  coordinator_->Tick();
  EXPECT_TRUE(other.TakeAssignments().empty());  // within the grace, the attempt waits
  now_ += 11'000;
  WorkerMessage hb;
  hb.mutable_heartbeat();
  coordinator_->HandleWorkerMessage("w2", c2, hb);
  coordinator_->Tick();
  EXPECT_EQ(Job(id, 1).attempt(), 2);
  EXPECT_NE(Job(id, 1).transitions().rbegin()[1].reason().find("not reported running"), std::string::npos);
  EXPECT_EQ(other.TakeAssignments().size(), 2u);
}

// Each stage is resolved once, at submit, and kept in the plan record: its defaults applied, its
// model, its seed.
TEST_F(CoordinatorTest, StagesAreResolvedOnceAtSubmitAndKeptInThePlanRecord) {
  ASSERT_TRUE(coordinator_->SubmitPlan(plan_, "plan.yaml").ok());
  coordinator_.reset();
  absl::StatusOr<StoreContents> contents = store_->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->plans.size(), 1u);
  const PlanRecord& record = contents->plans[0];
  ASSERT_EQ(record.resolved_size(), 2);
  const ResolvedStage& more = record.resolved(1);
  EXPECT_EQ(more.stage().name(), "more");
  EXPECT_EQ(more.stage().optimizer().lr(), 1e-3);     // from defaults
  EXPECT_EQ(more.stage().optimizer().beta2(), 0.95);  // built in
  EXPECT_EQ(more.model().layers(), 2);
  EXPECT_EQ(more.model().rope_theta(), 10000);  // built in
  EXPECT_EQ(more.seed(), StageSeed(7, "more"));
  EXPECT_FALSE(more.has_teacher_model());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(more.stage(), ResolveStage(plan_, 1)));
}

// A record written before plans kept their resolved stages gets them at load, and its jobs run as
// they would have.
TEST_F(CoordinatorTest, ARecordStoredWithoutResolvedStagesIsResolvedAtLoad) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  coordinator_.reset();
  PlanRecord record = store_->Load()->plans[0];
  record.clear_resolved();
  StoreWrite write;
  write.plans.push_back(&record);
  ASSERT_TRUE(store_->Write(write).ok());
  Open();
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].stage().name(), "core");
  EXPECT_EQ(a[0].stage().optimizer().lr(), 1e-3);
  EXPECT_EQ(a[0].model().rope_theta(), 10000);
  EXPECT_EQ(a[0].seed(), StageSeed(7, "core"));
  Finish("w1", conn, a, {20});
  ASSERT_EQ(Job(id, 0).state(), JOB_STATE_SUCCEEDED) << Job(id, 0).DebugString();
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].inputs().from(), "/ckpt/twostage-1/core/attempt-1/step-20");
}

// Later stages never read a checkpoint known bad: `stage@STEP` naming one fails the job saying
// so, and `last_k` takes the last K good ones.
TEST_F(CoordinatorTest, LaterStagesNeverReadACheckpointKnownBad) {
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/tests/integration/two_stage_plan.yaml");
  std::stringstream text;
  text << in.rdbuf() << R"(
  - {name: avg, kind: average, average: {checkpoints: [core@15, core]}}
  - {name: last, kind: average, from: core, average: {last_k: 2}}
)";
  ParsedPlan parsed = ParsePlanText(text.str(), PlanFormat::kYaml);
  ASSERT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  const std::string id = *coordinator_->SubmitPlan(parsed.plan, "plan.yaml");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 8);
  coordinator_->Tick();
  std::vector<Assignment> a;
  for (const Assignment& x : link.TakeAssignments()) {
    if (x.stage().name() == "core") a.push_back(x);
  }
  ASSERT_EQ(a.size(), 2u);
  for (const auto& rank : a) Progress("w1", conn, rank, 1);
  for (int64_t step : {5, 10, 15}) {
    for (const auto& rank : a) Checkpoint("w1", conn, rank, step, false);
  }
  for (const auto& rank : a) Exit("w1", conn, rank, 1, "killed");
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(a[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-15");
  for (const auto& rank : a) Exit("w1", conn, rank, kRankExitResumeCheckpointBad, "sha256 mismatch");
  coordinator_->Tick();
  a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(a[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-10");
  Finish("w1", conn, a, {20});
  coordinator_->Tick();
  std::map<std::string, Assignment> started = ByStage(link.TakeAssignments());
  ASSERT_TRUE(started.contains("last"));
  EXPECT_EQ(started["last"].inputs().checkpoints(0), "/ckpt/twostage-1/core/attempt-1/step-10");
  EXPECT_EQ(started["last"].inputs().checkpoints(1), "/ckpt/twostage-1/core/attempt-3/step-20");
  EXPECT_FALSE(started.contains("avg"));
  const JobStatus avg = Job(id, 2);
  EXPECT_EQ(avg.state(), JOB_STATE_FAILED) << avg.DebugString();
  EXPECT_NE(avg.reason().find("average.checkpoints[0]: stage 'core''s checkpoint at step 15 is bad (rank 0 on w1 exited with code 65: sha256 mismatch)"), std::string::npos) << avg.reason();
}

// Inputs arrive as typed fields: an average's checkpoints in order (listed, or the last K of
// `from`), a merge's inputs and base, a distillation teacher with its model; the job's status
// shows what its attempt reads.
TEST_F(CoordinatorTest, InputsOfAveragesMergesAndTeachersArriveTypedAndInOrder) {
  // A checkpoint outside the plan, named by path (it must exist: the coordinator checks at submit).
  const std::string outside = dir_ + "/outside/ckpt";
  std::filesystem::create_directories(outside);
  std::ofstream(outside + "/manifest.json") << "{}";
  const std::string extra = R"(
  - {name: avg, kind: average, average: {checkpoints: [core@5, more]}}
  - {name: last, kind: average, from: core, average: {last_k: 2}}
  - {name: mix, kind: merge, merge: {method: ties, inputs: [more, )" + outside + R"(], base: core}}
  - name: kd
    kind: distill
    tokens: 2560
    distill: {teacher: more}
    data_mix: [{at_tokens: 0, weights: {english: 1}}]
)";
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/tests/integration/two_stage_plan.yaml");
  std::stringstream text;
  text << in.rdbuf() << extra;
  ParsedPlan parsed = ParsePlanText(text.str(), PlanFormat::kYaml);
  ASSERT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  const absl::StatusOr<std::string> id = coordinator_->SubmitPlan(parsed.plan, "plan.yaml");
  ASSERT_TRUE(id.ok()) << id.status();
  FakeLink link;
  const int64_t conn = Register("w1", &link, 8);
  coordinator_->Tick();
  Finish("w1", conn, link.TakeAssignments(), {5, 10, 20});  // core
  coordinator_->Tick();
  std::vector<Assignment> started = link.TakeAssignments(), more;  // more, and last (it reads core only)
  for (const Assignment& x : started) {
    if (x.stage().name() == "more") more.push_back(x);
  }
  Finish("w1", conn, more, {10});
  coordinator_->Tick();
  for (const Assignment& x : link.TakeAssignments()) started.push_back(x);
  std::map<std::string, Assignment> a = ByStage(started);
  ASSERT_EQ(a.size(), 5u) << coordinator_->GetPlan(*id)->status().DebugString();

  const StageInputs& avg = a["avg"].inputs();
  ASSERT_EQ(avg.checkpoints_size(), 2) << avg.DebugString();
  EXPECT_EQ(avg.checkpoints(0), "/ckpt/twostage-1/core/attempt-1/step-5");
  EXPECT_EQ(avg.checkpoints(1), "/ckpt/twostage-1/more/attempt-1/step-10");
  EXPECT_TRUE(avg.from().empty());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(Job(*id, 2).inputs(), avg))
      << Job(*id, 2).DebugString();

  const StageInputs& last = a["last"].inputs();
  ASSERT_EQ(last.checkpoints_size(), 2) << last.DebugString();
  EXPECT_EQ(last.checkpoints(0), "/ckpt/twostage-1/core/attempt-1/step-10");
  EXPECT_EQ(last.checkpoints(1), "/ckpt/twostage-1/core/attempt-1/step-20");
  EXPECT_EQ(last.from(), "/ckpt/twostage-1/core/attempt-1/step-20");
  EXPECT_TRUE(CheckInputsResolved(a["last"].stage(), last).ok());

  const StageInputs& mix = a["mix"].inputs();
  ASSERT_EQ(mix.merge_inputs_size(), 2) << mix.DebugString();
  EXPECT_EQ(mix.merge_inputs(0), "/ckpt/twostage-1/more/attempt-1/step-10");
  EXPECT_EQ(mix.merge_inputs(1), outside);
  EXPECT_EQ(mix.merge_base(), "/ckpt/twostage-1/core/attempt-1/step-20");

  EXPECT_EQ(a["kd"].inputs().teacher(), "/ckpt/twostage-1/more/attempt-1/step-10");
  EXPECT_EQ(a["kd"].teacher_model().layers(), 2);
  EXPECT_EQ(a["kd"].teacher_model().rope_theta(), 10000);
  EXPECT_FALSE(a["avg"].has_teacher_model());
}

// A reference to a step the stage never committed fails the job when it would start, naming the
// field that made it.
TEST_F(CoordinatorTest, AStepNeverCommittedFailsTheJobNamingTheField) {
  Stage* avg = plan_.add_stages();
  avg->set_name("avg");
  avg->set_kind(STAGE_KIND_AVERAGE);
  avg->mutable_average()->add_checkpoints("more");
  avg->mutable_average()->add_checkpoints("core@7");
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  Finish("w1", conn, link.TakeAssignments(), {5, 20});
  coordinator_->Tick();
  Finish("w1", conn, link.TakeAssignments(), {10});
  coordinator_->Tick();
  EXPECT_TRUE(link.TakeAssignments().empty());
  const JobStatus job = Job(id, 2);
  EXPECT_EQ(job.state(), JOB_STATE_FAILED);
  EXPECT_EQ(job.reason(), "average.checkpoints[1]: stage 'core' committed no checkpoint at step 7");
}

// A job waiting for a stage it names twice (two checkpoints of it here; a dpo stage's `from` and
// its default reference, in practice) names it once.
TEST_F(CoordinatorTest, AStageNamedTwiceIsWaitedForOnce) {
  Stage* avg = plan_.add_stages();
  avg->set_name("avg");
  avg->set_kind(STAGE_KIND_AVERAGE);
  for (const char* c : {"more", "core", "more@5"}) avg->mutable_average()->add_checkpoints(c);
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  FakeLink link;
  Register("w1", &link, 2);
  coordinator_->Tick();
  EXPECT_EQ(Job(id, 2).reason(), "waiting for stage more, core to finish");
}

TEST_F(CoordinatorTest, PriorityGoesFirstAndWaitingJobsSayWhy) {
  TrainingPlan low = plan_, high = plan_;
  low.set_name("low");
  high.set_name("high");
  high.set_priority(5);
  const std::string l = *coordinator_->SubmitPlan(low, "");
  const std::string h = *coordinator_->SubmitPlan(high, "");
  FakeLink link;
  Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].plan_id(), h);
  EXPECT_EQ(Job(l, 0).state(), JOB_STATE_PENDING);
  EXPECT_EQ(Job(l, 0).reason(), "waiting for 2 free slots (0 free)");
  EXPECT_EQ(coordinator_->Metrics().pending_jobs, 3);
}


TEST_F(CoordinatorTest, APlanFaultFailsTheJobAtOnceWithItsClassInTheReason) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  ASSERT_EQ(a.size(), 2u);
  Exit("w1", conn, a[0], 66, "cannot open /data/prepared/tokenizer.model: No such file or directory");
  const JobStatus core = Job(id, 0);
  EXPECT_EQ(core.state(), JOB_STATE_FAILED);
  EXPECT_EQ(core.attempt(), 1);
  EXPECT_EQ(core.reason(),
            "attempt 1 failed (plan fault: input missing or unreadable): rank 0 on w1 exited with code 66: "
            "cannot open /data/prepared/tokenizer.model: No such file or directory; not retried: retrying does "
            "not heal a fault of the plan");
  EXPECT_EQ(core.last_failure().failure_class(), FAILURE_CLASS_PLAN);
  EXPECT_EQ(core.last_failure().cause(), "input");
  EXPECT_EQ(coordinator_->GetPlan(id)->status().state(), PLAN_STATE_FAILED);
  Exit("w1", conn, a[1], -15);
  coordinator_->Tick();
  EXPECT_TRUE(link.TakeAssignments().empty());  // no second attempt
  const auto failures = coordinator_->Metrics().attempt_failures;
  EXPECT_EQ(failures.at({"plan", "input"}), 1);
}

TEST_F(CoordinatorTest, APlanFaultReportedAfterAPeersTimeoutStillFailsTheJob) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  // Rank 0 loses its peer first (a cluster-looking exit), then rank 1 reports why it left.
  Exit("w1", conn, a[0], 75, "all-reduce: connection closed by peer");
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_RECOVERING);
  Exit("w1", conn, a[1], 78, "model.vocab_size 256 is smaller than the tokenizer's 512");
  const JobStatus core = Job(id, 0);
  EXPECT_EQ(core.state(), JOB_STATE_FAILED) << core.DebugString();
  EXPECT_EQ(core.last_failure().cause(), "config");
  EXPECT_NE(core.reason().find("plan fault: configuration rejected"), std::string::npos) << core.reason();
  coordinator_->Tick();
  EXPECT_TRUE(link.TakeAssignments().empty());
  // Counted once, as the plan's.
  const auto failures = coordinator_->Metrics().attempt_failures;
  EXPECT_EQ(failures.at({"plan", "config"}), 1);
  EXPECT_EQ(failures.at({"cluster", "timeout"}), 0);
}

TEST_F(CoordinatorTest, ACrashThatRepeatsIdenticallyIsThePlansFault) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    coordinator_->Tick();
    std::vector<Assignment> a = link.TakeAssignments();
    ASSERT_EQ(a.size(), 2u) << "attempt " << attempt;
    Exit("w1", conn, a[1], 1, "std::out_of_range at step 3");
    Exit("w1", conn, a[0], -15);
    link.messages.clear();
  }
  const JobStatus core = Job(id, 0);
  EXPECT_EQ(core.state(), JOB_STATE_FAILED);
  EXPECT_EQ(core.attempt(), 2);
  EXPECT_EQ(core.last_failure().failure_class(), FAILURE_CLASS_PLAN);
  EXPECT_EQ(core.last_failure().cause(), "repeat");
  EXPECT_NE(core.reason().find("it failed the same way on a fresh attempt"), std::string::npos) << core.reason();
}

// The waits between retries, measured on the injected clock: the first retry at once, then 1 s,
// 2 s and 4 s (the jitter at its top), each attempt placed exactly when its wait is over.
TEST_F(CoordinatorTest, ClusterFaultsAreRetriedWithAGrowingBackoff) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  coordinator_->Tick();
  std::vector<Assignment> a = link.TakeAssignments();
  std::vector<int64_t> waits;
  for (int attempt = 1; attempt <= 4; ++attempt) {
    ASSERT_EQ(a.size(), 2u) << "attempt " << attempt;
    Exit("w1", conn, a[1], -9);  // killed: the cluster's fault
    Exit("w1", conn, a[0], -15);
    if (attempt > 1) {
      EXPECT_NE(Job(id, 0).reason().find(absl::StrFormat("attempt %d starts in %.1f s", attempt + 1,
                                                          static_cast<double>(1 << (attempt - 2)))),
                std::string::npos)
          << Job(id, 0).reason();
    }
    link.messages.clear();
    const int64_t failed_at = now_;
    while (true) {
      coordinator_->Tick();
      a = link.TakeAssignments();
      if (!a.empty() || now_ - failed_at > 60'000) break;
      now_ += 1;
      if ((now_ - failed_at) % 1000 == 0) {  // w1 stays alive
        WorkerMessage hb;
        hb.mutable_heartbeat();
        coordinator_->HandleWorkerMessage("w1", conn, hb);
      }
    }
    waits.push_back(now_ - failed_at);
  }
  EXPECT_EQ(waits, (std::vector<int64_t>{0, 1000, 2000, 4000}));
  EXPECT_EQ(Job(id, 0).attempt(), 5);
  EXPECT_EQ(coordinator_->Metrics().attempt_failures.at({"cluster", "signal"}), 4);
}

// retry: {max_retries: 2, window_seconds: 60}: a third fault within a minute fails the job; faults
// spread wider than the window never do.
TEST_F(CoordinatorTest, TheRetryBudgetIsCountedPerWindow) {
  plan_.mutable_retry()->set_max_retries(2);
  plan_.mutable_retry()->set_window_seconds(60);
  plan_.mutable_retry()->set_initial_backoff_seconds(0);
  plan_.mutable_retry()->set_max_backoff_seconds(0);
  FakeLink link;
  const int64_t conn = Register("w1", &link, 2);
  auto run = [&](int64_t apart_ms) {
    const std::string id = *coordinator_->SubmitPlan(plan_, "");
    for (int fault = 1; fault <= 5; ++fault) {
      coordinator_->Tick();
      std::vector<Assignment> a = link.TakeAssignments();
      if (a.size() != 2u) break;
      Exit("w1", conn, a[1], -9);
      Exit("w1", conn, a[0], -15);
      link.messages.clear();
      now_ += apart_ms;
      WorkerMessage hb;
      hb.mutable_heartbeat();
      coordinator_->HandleWorkerMessage("w1", conn, hb);
    }
    return Job(id, 0);
  };
  const JobStatus dense = run(1000);
  EXPECT_EQ(dense.state(), JOB_STATE_FAILED);
  EXPECT_EQ(dense.attempt(), 3);
  EXPECT_NE(dense.reason().find("not retried: 3 cluster faults within 1m, and the plan's retry.max_retries is 2"),
            std::string::npos)
      << dense.reason();
  const JobStatus sparse = run(31'000);  // at most two faults in any minute
  EXPECT_EQ(sparse.state(), JOB_STATE_RECOVERING) << sparse.reason();
  EXPECT_EQ(sparse.attempt(), 5);
}

// With heartbeat datagrams on, the RegisterAck gives the worker the UDP port, its connection id
// and key; a datagram signed with that key keeps the worker alive, one signed with another key or
// for another connection does not.
TEST_F(CoordinatorTest, HeartbeatDatagramsKeepAWorkerAliveOnlyWithItsConnectionsKey) {
  using Verdict = Coordinator::DatagramVerdict;
  coordinator_->EnableHeartbeatDatagrams(7070);
  FakeLink link;
  const int64_t conn = Register("w1", &link, 1);
  ASSERT_FALSE(link.messages.empty());
  const RegisterAck ack = link.messages[0].registered();
  EXPECT_EQ(ack.heartbeat_udp_port(), 7070);
  EXPECT_EQ(ack.connection(), conn);
  ASSERT_EQ(ack.heartbeat_key().size(), kHeartbeatKeySize);
  EXPECT_EQ(ack.full_heartbeat_interval_ms(), 30000);
  HeartbeatKey key{};
  std::memcpy(key.data(), ack.heartbeat_key().data(), key.size());
  HeartbeatKey other_key = key;
  other_key[0] ^= 1;
  uint64_t sequence = 0;
  for (int i = 0; i < 3; ++i) {  // 12 s alive on datagrams alone (timeout 5 s)
    now_ += 4000;
    EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn, ++sequence, key)), Verdict::kAccepted);
    coordinator_->Tick();
    ASSERT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_IDLE) << i;
  }
  now_ += 4000;
  EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn, ++sequence, other_key)), Verdict::kBadMac);
  EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn + 1, ++sequence, key)),
            Verdict::kUnknownConnection);
  coordinator_->Tick();
  EXPECT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_IDLE);
  now_ += 2000;  // 6 s since the last good one
  EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn, ++sequence, other_key)), Verdict::kBadMac);
  coordinator_->Tick();
  EXPECT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_LOST);
  // A lost worker is not revived by its old key.
  EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn, ++sequence, key)), Verdict::kUnknownConnection);
  coordinator_->Tick();
  EXPECT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_LOST);
}

// A datagram seen on the wire and sent again (the same bytes), or an older one, does not keep a
// worker alive: only a sequence number above the last accepted one does. Each connection counts
// on its own: a worker that registers again starts over at 1, under a new key.
TEST_F(CoordinatorTest, AReplayedHeartbeatDatagramDoesNotKeepAWorkerAlive) {
  using Verdict = Coordinator::DatagramVerdict;
  coordinator_->EnableHeartbeatDatagrams(7070);
  FakeLink link;
  const int64_t conn = Register("w1", &link, 1);
  ASSERT_FALSE(link.messages.empty());
  HeartbeatKey key{};
  ASSERT_EQ(link.messages[0].registered().heartbeat_key().size(), key.size());
  std::memcpy(key.data(), link.messages[0].registered().heartbeat_key().data(), key.size());
  // What an eavesdropper holds: the bytes of datagrams 1 to 3, as they crossed the wire.
  std::vector<std::string> seen;
  for (uint64_t n = 1; n <= 3; ++n) seen.push_back(EncodeHeartbeatDatagram(SignedHeartbeat(conn, n, key)));
  auto deliver = [&](const std::string& bytes) {
    std::optional<HeartbeatDatagram> beat = DecodeHeartbeatDatagram(bytes);
    EXPECT_TRUE(beat.has_value());
    return beat ? coordinator_->OnHeartbeatDatagram(*beat) : Verdict::kUnknownConnection;
  };
  now_ += 1000;
  EXPECT_EQ(deliver(seen[0]), Verdict::kAccepted);
  EXPECT_EQ(deliver(seen[2]), Verdict::kAccepted);  // a lost datagram in between is fine
  EXPECT_EQ(deliver(seen[2]), Verdict::kReplayed);  // the same bytes again
  EXPECT_EQ(deliver(seen[1]), Verdict::kReplayed);  // an older one
  // The worker dies after datagram 3 (at 1 s); its datagrams keep being replayed, and it is
  // still declared lost at the timeout (5 s).
  for (int i = 0; i < 6; ++i) {
    now_ += 1000;
    for (const std::string& bytes : seen) EXPECT_EQ(deliver(bytes), Verdict::kReplayed) << i;
    coordinator_->Tick();
  }
  EXPECT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_LOST);

  // Registered again: a new connection, a new key, and its own numbering from 1; the old
  // connection's datagrams count for nothing.
  FakeLink again;
  const int64_t conn2 = Register("w1", &again, 1);
  ASSERT_NE(conn2, conn);
  ASSERT_FALSE(again.messages.empty());
  HeartbeatKey key2{};
  ASSERT_EQ(again.messages[0].registered().heartbeat_key().size(), key2.size());
  std::memcpy(key2.data(), again.messages[0].registered().heartbeat_key().data(), key2.size());
  EXPECT_NE(key2, key);
  for (int i = 0; i < 6; ++i) {
    now_ += 1000;
    EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn2, i + 1, key2)), Verdict::kAccepted) << i;
    EXPECT_EQ(deliver(seen[2]), Verdict::kUnknownConnection);
    // The old connection's key on the new connection's id.
    EXPECT_EQ(coordinator_->OnHeartbeatDatagram(SignedHeartbeat(conn2, 100 + i, key)), Verdict::kBadMac);
    coordinator_->Tick();
    ASSERT_EQ(coordinator_->ListWorkers().workers(0).state(), WORKER_STATE_IDLE) << i;
  }
}

// Workers that leave on purpose (SIGTERM: a drain, a Slurm allocation's end) move their jobs at
// once, however often: a budget of one retry per hour is not touched by five departures.
TEST_F(CoordinatorTest, WorkersThatLeaveUseNoneOfTheRetryBudget) {
  plan_.mutable_retry()->set_max_retries(1);
  const std::string id = *coordinator_->SubmitPlan(plan_, "");
  for (int n = 1; n <= 5; ++n) {
    FakeLink link;
    const std::string worker = "w" + std::to_string(n);
    const int64_t conn = Register(worker, &link, 2);
    coordinator_->Tick();
    ASSERT_EQ(link.TakeAssignments().size(), 2u) << "departure " << n << ": " << Job(id, 0).reason();
    WorkerMessage leave;
    leave.mutable_leave()->set_reason("the worker is stopping (SIGTERM)");
    coordinator_->HandleWorkerMessage(worker, conn, leave);
    const JobStatus core = Job(id, 0);
    EXPECT_EQ(core.state(), JOB_STATE_RECOVERING) << core.reason();
    EXPECT_EQ(core.reason().find("starts in"), std::string::npos) << "no backoff: " << core.reason();
    now_ += 1000;
  }
  EXPECT_EQ(Job(id, 0).attempt(), 5);
  EXPECT_EQ(coordinator_->Metrics().attempt_failures.at({"cluster", "worker_left"}), 5);
}

// What a plan reads is checked when it arrives: a missing tokenizer, a source without shards and a
// checkpoint path that is not there are refused with their field paths, and nothing is stored.
TEST_F(CoordinatorTest, MissingFilesAreRefusedAtSubmitWithTheirFieldPaths) {
  prepared_data_ = dir_ + "/prepared";
  std::filesystem::create_directories(prepared_data_ + "/english/train");
  Open();
  plan_.mutable_stages(1)->set_from(dir_ + "/no-such-checkpoint");
  absl::StatusOr<std::string> refused = coordinator_->SubmitPlan(plan_, "plan.yaml");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(refused.status().message());
  EXPECT_NE(message.find("data.tokenizer: is empty, and its default: " + prepared_data_ +
                         "/tokenizer.model does not exist"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("stages[1].data_mix[0].weights.code: " + prepared_data_ + "/code/train does not exist"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("stages[1].from: names checkpoint " + dir_ + "/no-such-checkpoint"), std::string::npos)
      << message;
  EXPECT_TRUE(coordinator_->ListPlans(true).plans().empty());

  // Data prepared with `--tokenizer X.json` holds tokenizer.json, which the default finds too.
  std::ofstream(prepared_data_ + "/tokenizer.json") << "a stand-in: only its presence is checked here";
  std::filesystem::create_directories(prepared_data_ + "/code/train");
  plan_.mutable_stages(1)->set_from("core");
  EXPECT_TRUE(coordinator_->SubmitPlan(plan_, "plan.yaml").ok());
  std::filesystem::remove(prepared_data_ + "/tokenizer.json");
  std::ofstream(prepared_data_ + "/tokenizer.model") << "a stand-in: only its presence is checked here";
  EXPECT_TRUE(coordinator_->SubmitPlan(plan_, "plan.yaml").ok());
}


// SubmitPlanRequest.plan_yaml (the Python client's way in): the coordinator reads the text with the
// same code as `loom validate`, so a valid file becomes the same plan and an invalid one is refused
// with every error's source, line, column and field path; oversized text and a request that sets
// both forms are refused before anything is stored.
TEST_F(CoordinatorTest, PlanTextIsReadAndValidatedLikeAPlanFile) {
  PlanServiceImpl service(coordinator_.get());
  const std::string path = std::string(LOOM_SOURCE_DIR) + "/tests/integration/two_stage_plan.yaml";
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  auto submit = [&](const std::string& yaml, SubmitPlanResponse* response, bool with_plan = false) {
    SubmitPlanRequest request;
    request.set_plan_yaml(yaml);
    request.set_source("/plans/two.yaml");
    if (with_plan) *request.mutable_plan() = plan_;
    return service.SubmitPlan(nullptr, &request, response);
  };

  SubmitPlanResponse response;
  grpc::Status ok = submit(text.str(), &response);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(response.plan_id(), "twostage-1");
  absl::StatusOr<GetPlanResponse> stored = coordinator_->GetPlan("twostage-1");
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(stored->plan(), plan_))
      << "plan_yaml read differently from LoadPlan:\n" << stored->plan().DebugString();

  std::string invalid = text.str();
  const size_t at = invalid.find("tokens: 2560");
  ASSERT_NE(at, std::string::npos);
  invalid.replace(at, 12, "tokens: -5  ");
  grpc::Status refused = submit(invalid, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("1 error in /plans/two.yaml:\n/plans/two.yaml:20:13: stages[1].tokens: "),
            std::string::npos)
      << refused.error_message();

  refused = submit("name: [unclosed\n", &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("not valid YAML"), std::string::npos) << refused.error_message();

  refused = submit(text.str() + "#" + std::string(kMaxPlanBytes, 'x') + "\n", &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("the limit is 1048576"), std::string::npos) << refused.error_message();

  refused = submit(text.str(), &response, /*with_plan=*/true);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("not both"), std::string::npos) << refused.error_message();

  EXPECT_EQ(coordinator_->ListPlans(true).plans_size(), 1) << "a refused plan was stored";
}

}  // namespace
}  // namespace loom::coordinator

namespace loom::coordinator {
namespace {

using namespace loom::v1;

// Retention belongs to the coordinator: a checkpoint is deleted (from the list, the store and the
// disk) only once newer ones are committed, beyond checkpoint.keep_last and never while a later
// stage names it (`core@5`); once the job succeeds, what its attempts wrote that
// no committed checkpoint needs is swept, and the stage's caches stay.
TEST_F(CoordinatorTest, RetentionDeletesOnlyWhatNoStageStillNeeds) {
  checkpoint_root_ = dir_ + "/ckpt";
  Open();
  std::ifstream in(std::string(LOOM_SOURCE_DIR) + "/tests/integration/two_stage_plan.yaml");
  std::stringstream text;
  text << in.rdbuf() << R"(
  - {name: avg, kind: average, average: {checkpoints: [core@5, core]}}
  - {name: last, kind: average, from: core, average: {last_k: 2}}
)";
  std::string yaml = text.str();
  yaml.replace(yaml.find("checkpoint: {every_steps: 5}"), 28, "checkpoint: {every_steps: 5, keep_last: 2}");
  ParsedPlan parsed = ParsePlanText(yaml, PlanFormat::kYaml);
  ASSERT_TRUE(parsed.errors.empty()) << FormatPlanErrors(parsed.errors);
  FakeLink link;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(parsed.plan, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  const std::string stage_dir = checkpoint_root_ + "/twostage-1/core";
  ASSERT_EQ(a[0].checkpoint_dir(), stage_dir + "/attempt-1");
  auto on_disk = [&](int64_t step) {
    return std::filesystem::exists(a[0].checkpoint_dir() + "/step-" + std::to_string(step));
  };
  auto listed = [&] {
    std::set<int64_t> steps;
    absl::StatusOr<ListCheckpointsResponse> list = coordinator_->ListCheckpoints(id, "core");
    EXPECT_TRUE(list.ok()) << list.status();
    if (list.ok()) {
      for (const auto& c : list->checkpoints()) steps.insert(c.step());
    }
    return steps;
  };
  // What the ranks write: the checkpoints, a cache beside the attempts, a save that never
  // completed, and the directory of an attempt that was replaced.
  for (int64_t step : {5, 10, 15, 20}) {
    std::filesystem::create_directories(a[0].checkpoint_dir() + "/step-" + std::to_string(step));
  }
  std::ofstream(stage_dir + "/reference_logprobs.rank0.bin") << "cache";
  std::filesystem::create_directories(a[0].checkpoint_dir() + "/.tmp-step-000025-1-2");
  std::filesystem::create_directories(stage_dir + "/attempt-9/step-5");

  for (int64_t step : {5, 10, 15}) {
    for (const auto& rank : a) Checkpoint("w1", conn, rank, step, false);
  }
  // keep_last 2 (which `last`'s window needs), and `avg` names step 5: nothing is deleted yet.
  EXPECT_EQ(listed(), (std::set<int64_t>{5, 10, 15}));
  EXPECT_TRUE(on_disk(5) && on_disk(10) && on_disk(15));
  for (const auto& rank : a) Checkpoint("w1", conn, rank, 20, true);
  EXPECT_EQ(listed(), (std::set<int64_t>{5, 15, 20}));
  EXPECT_FALSE(on_disk(10));
  EXPECT_TRUE(on_disk(5) && on_disk(15) && on_disk(20));
  // Still uncommitted: the partial save and the replaced attempt's directory wait for the job's end.
  EXPECT_TRUE(std::filesystem::exists(stage_dir + "/attempt-9"));
  for (const auto& rank : a) Exit("w1", conn, rank, 0);
  ASSERT_EQ(Job(id, 0).state(), JOB_STATE_SUCCEEDED) << Job(id, 0).DebugString();
  EXPECT_FALSE(std::filesystem::exists(stage_dir + "/attempt-9"));
  EXPECT_FALSE(std::filesystem::exists(a[0].checkpoint_dir() + "/.tmp-step-000025-1-2"));
  EXPECT_TRUE(std::filesystem::exists(stage_dir + "/reference_logprobs.rank0.bin"));
  EXPECT_TRUE(on_disk(5) && on_disk(15) && on_disk(20));
  // The deletion is durable: a restarted coordinator lists what is on disk.
  Open();
  EXPECT_EQ(listed(), (std::set<int64_t>{5, 15, 20}));
}

// Fencing: an attempt commits only what it wrote under its own directory, and a rank of an
// attempt that was replaced commits nothing.
TEST_F(CoordinatorTest, AnAttemptCommitsOnlyUnderItsOwnDirectory) {
  FakeLink link;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  auto report = [&](const Assignment& rank, const std::string& path, int64_t step) {
    WorkerMessage m;
    CheckpointReport* r = m.mutable_checkpoint();
    *r->mutable_rank() = rank.rank();
    r->set_step(step);
    r->set_path(path);
    r->set_num_shards(2);
    r->set_shard(rank.rank().rank());
    coordinator_->HandleWorkerMessage("w1", conn, m);
  };
  for (const std::string& path : {std::string("/etc"), std::string("/ckpt/twostage-1/core/attempt-2/step-5"),
                                  std::string("/ckpt/twostage-1/core/attempt-1/../attempt-2/step-5"),
                                  std::string("/ckpt/twostage-1/more/attempt-1/step-5")}) {
    for (const auto& rank : a) report(rank, path, 5);
  }
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 0);
  for (const auto& rank : a) report(rank, "/ckpt/twostage-1/core/attempt-1/step-5", 5);
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 1);
  // Attempt 1 fails; attempt 2 runs. Attempt 1's late reports change nothing.
  for (const auto& rank : a) Exit("w1", conn, rank, 1, "killed");
  coordinator_->Tick();
  const std::vector<Assignment> second = link.TakeAssignments();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].checkpoint_dir(), "/ckpt/twostage-1/core/attempt-2");
  for (const auto& rank : a) report(rank, "/ckpt/twostage-1/core/attempt-1/step-10", 10);
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 1);
  EXPECT_EQ(Job(id, 0).last_checkpoint().step(), 5);
}

// Fencing: a worker reports only for the ranks placed on it in the current attempt, and commits
// only under that attempt's directory; the attempt's rendezvous secret travels in its assignments
// and its namespace closes when the attempt ends (success, cancel).
TEST_F(CoordinatorTest, AWorkerReportsOnlyForItsOwnRanksOfTheCurrentAttempt) {
  FakeLink link, other;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].rendezvous_secret().size(), RendezvousStore::kSecretBytes);
  EXPECT_EQ(a[0].rendezvous_secret(), a[1].rendezvous_secret());
  EXPECT_TRUE(coordinator_->rendezvous().HasAttempt(a[0].rendezvous_prefix()));
  const int64_t conn2 = Register("w2", &other, 1);
  for (const auto& rank : a) {
    Progress("w2", conn2, rank, 50);
    Checkpoint("w2", conn2, rank, 50, /*final=*/true);
  }
  Exit("w2", conn2, a[0], 1, "forged");
  EXPECT_EQ(coordinator_->Metrics().fenced_reports["wrong_worker"], 5);
  JobStatus job = Job(id, 0);
  EXPECT_EQ(job.state(), loom::v1::JOB_STATE_RUNNING) << job.DebugString();
  EXPECT_EQ(job.attempt(), 1);
  EXPECT_EQ(job.progress().step(), 1);
  EXPECT_FALSE(job.has_last_failure());
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 0);
  // Its own ranks, but a checkpoint of another job's directory; and a rank of another attempt.
  for (const auto& rank : a) {
    WorkerMessage m;
    *m.mutable_checkpoint()->mutable_rank() = rank.rank();
    m.mutable_checkpoint()->set_step(5);
    m.mutable_checkpoint()->set_path("/ckpt/twostage-1/more/attempt-1/step-5");
    m.mutable_checkpoint()->set_num_shards(2);
    m.mutable_checkpoint()->set_shard(rank.rank().rank());
    coordinator_->HandleWorkerMessage("w1", conn, m);
  }
  Assignment stale = a[0];
  stale.mutable_rank()->set_attempt(7);
  Exit("w1", conn, stale, 1, "from the future");
  const auto fenced = coordinator_->Metrics().fenced_reports;
  EXPECT_EQ(fenced.at("checkpoint_path"), 2);
  EXPECT_EQ(fenced.at("stale_attempt"), 1);
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 0);
  EXPECT_EQ(Job(id, 0).state(), loom::v1::JOB_STATE_RUNNING);

  // The worker the ranks are on: applied. Success closes the attempt's rendezvous.
  Finish("w1", conn, a, {5, 10, 15, 20});
  EXPECT_EQ(Job(id, 0).state(), loom::v1::JOB_STATE_SUCCEEDED);
  EXPECT_FALSE(coordinator_->rendezvous().HasAttempt(a[0].rendezvous_prefix()));
  // The next stage's attempt has a secret of its own; a cancel closes it.
  coordinator_->Tick();
  const std::vector<Assignment> next = link.TakeAssignments();
  ASSERT_FALSE(next.empty());
  EXPECT_NE(next[0].rendezvous_secret(), a[0].rendezvous_secret());
  EXPECT_TRUE(coordinator_->rendezvous().HasAttempt(next[0].rendezvous_prefix()));
  ASSERT_TRUE(coordinator_->CancelPlan(id, "test").ok());
  EXPECT_FALSE(coordinator_->rendezvous().HasAttempt(next[0].rendezvous_prefix()));
}

// A save that failed is reported, counted and never committed, and training goes on; a job that
// has committed nothing for three checkpoint intervals carries a warning until its next commit.
TEST_F(CoordinatorTest, AFailedSaveIsReportedAndThreeIntervalsWithoutACommitWarn) {
  FakeLink link;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  WorkerMessage failed;
  CheckpointReport* r = failed.mutable_checkpoint();
  *r->mutable_rank() = a[0].rank();
  r->set_step(5);
  r->set_path(a[0].checkpoint_dir() + "/step-5");
  r->set_num_shards(2);
  r->set_error("No space left on device");
  coordinator_->HandleWorkerMessage("w1", conn, failed);
  Checkpoint("w1", conn, a[1], 5, false);  // the other rank's part was fine
  JobStatus job = Job(id, 0);
  EXPECT_EQ(job.checkpoint_save_failures(), 1);
  EXPECT_EQ(job.last_checkpoint_save_error(), "step 5: No space left on device");
  EXPECT_FALSE(job.has_last_checkpoint());
  EXPECT_EQ(coordinator_->ListCheckpoints(id, "")->checkpoints_size(), 0);
  EXPECT_EQ(job.state(), JOB_STATE_RUNNING);
  EXPECT_EQ(coordinator_->Metrics().checkpoint_save_failures, 1);
  Progress("w1", conn, a[0], 14);
  EXPECT_EQ(Job(id, 0).warning(), "");
  Progress("w1", conn, a[0], 15);
  EXPECT_EQ(Job(id, 0).warning(),
            "no checkpoint committed for 15 steps (3 intervals of checkpoint.every_steps 5); last failed save: step "
            "5: No space left on device");
  for (const auto& rank : a) Checkpoint("w1", conn, rank, 15, false);
  EXPECT_EQ(Job(id, 0).warning(), "");
  EXPECT_EQ(Job(id, 0).last_checkpoint().step(), 15);
}

}  // namespace
}  // namespace loom::coordinator

namespace loom::coordinator {
namespace {

using namespace loom::v1;

// A job whose ranks make no step for max(step_time_factor x median step time, min_seconds) is
// hung: its attempt fails as a cluster fault with the reason, and the next attempt is placed.
TEST_F(CoordinatorTest, AJobWithoutAStepForLongerThanItsHangPolicyAllowsIsRetried) {
  plan_.mutable_hang()->set_step_time_factor(10);
  plan_.mutable_hang()->set_min_seconds(2);
  FakeLink link;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  auto RegisterHeartbeat = [&](int64_t connection) {
    WorkerMessage m;
    m.mutable_heartbeat();
    coordinator_->HandleWorkerMessage("w1", connection, m);
  };
  // Steps of 0.5 s: the median is 0.5 s, the limit max(10 x 0.5, 2) = 5 s.
  for (int64_t step = 2; step <= 9; ++step) {
    now_ += 500;
    for (const auto& rank : a) Progress("w1", conn, rank, step);
    RegisterHeartbeat(conn);
    coordinator_->Tick();
  }
  ASSERT_EQ(Job(id, 0).state(), JOB_STATE_RUNNING);
  for (int i = 0; i < 4; ++i) {  // 4.8 s without a step, heartbeats still coming: not hung yet
    now_ += 1200;
    RegisterHeartbeat(conn);
    coordinator_->Tick();
  }
  ASSERT_EQ(Job(id, 0).state(), JOB_STATE_RUNNING) << Job(id, 0).reason();
  now_ += 1200;
  RegisterHeartbeat(conn);
  coordinator_->Tick();
  const JobStatus job = Job(id, 0);
  EXPECT_EQ(job.last_failure().cause(), "hung") << job.DebugString();
  EXPECT_EQ(job.last_failure().failure_class(), FAILURE_CLASS_CLUSTER);
  EXPECT_NE(job.last_failure().message().find("no step for 6.0 s (median 0.50 s"), std::string::npos)
      << job.last_failure().message();
  EXPECT_GE(link.Aborts(), 2);  // the hung attempt's ranks are aborted
  for (const auto& rank : a) Exit("w1", conn, rank, -9, "killed");
  coordinator_->Tick();
  EXPECT_EQ(Job(id, 0).attempt(), 2) << Job(id, 0).DebugString();
}

}  // namespace
}  // namespace loom::coordinator

namespace loom::coordinator {
namespace {

using namespace loom::v1;

// `loom workers drain`: the worker's ranks are told to checkpoint and stop; once every rank has
// reported the checkpoint and exited 76 the job moves, from that checkpoint, at once and outside
// the retry budget. A drained worker gets no new ranks.
TEST_F(CoordinatorTest, ADrainedWorkersJobMovesFromTheCheckpointItsRanksSavedOnRequest) {
  plan_.mutable_retry()->set_max_retries(0);  // any fault counted in the budget would fail the job
  FakeLink link;
  int64_t conn = 0;
  std::string id;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &id);
  ASSERT_EQ(a.size(), 2u);
  FakeLink other;
  const int64_t other_conn = Register("w2", &other, 2);
  ASSERT_TRUE(coordinator_->DrainWorker("w1", /*undrain=*/false).ok());
  int preempts = 0;
  for (const auto& m : link.messages) preempts += m.has_preempt();
  EXPECT_EQ(preempts, 1);
  for (const auto& rank : a) Checkpoint("w1", conn, rank, 7, false);
  Exit("w1", conn, a[0], kRankExitPreempted, "stopped on request after the checkpoint at step 7");
  EXPECT_EQ(Job(id, 0).state(), JOB_STATE_RUNNING);  // rank 1 has not exited yet
  Exit("w1", conn, a[1], kRankExitPreempted, "stopped on request after the checkpoint at step 7");
  const JobStatus moved = Job(id, 0);
  EXPECT_EQ(moved.state(), JOB_STATE_RECOVERING) << moved.DebugString();
  EXPECT_EQ(moved.last_failure().cause(), "preempted");
  EXPECT_NE(moved.reason().find("cluster fault: drained after a checkpoint"), std::string::npos) << moved.reason();
  coordinator_->Tick();
  const std::vector<Assignment> b = other.TakeAssignments();
  ASSERT_EQ(b.size(), 2u) << "the drained worker gets no new ranks";
  EXPECT_TRUE(link.TakeAssignments().empty());
  EXPECT_EQ(b[0].resume_from(), "/ckpt/twostage-1/core/attempt-1/step-7");
  (void)other_conn;
}

// --plan-retention: a plan that ended longer ago than the retention is forgotten whole (records,
// committed-checkpoint list, run history, metric series, in-memory state) and asking for it says
// it expired; a live plan, and the expired plan's checkpoint files, stay. Real RocksDB, injected
// clock.
TEST_F(CoordinatorTest, APlanThatEndedLongerAgoThanTheRetentionIsForgottenButItsFilesStay) {
  plan_retention_ = absl::Hours(1);
  checkpoint_root_ = dir_ + "/ckpt";
  Open();
  FakeLink link;
  int64_t conn = 0;
  std::string ended;
  const std::vector<Assignment> a = PlaceFirstStage(plan_, &link, &conn, &ended);
  ASSERT_EQ(a.size(), 2u);
  const std::string final_dir = a[0].checkpoint_dir() + "/step-10";
  std::filesystem::create_directories(final_dir);
  Finish("w1", conn, a, {10});
  ASSERT_EQ(Job(ended, 0).state(), JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(coordinator_->CancelPlan(ended, "").ok());  // "more" never runs: the plan ends now
  ASSERT_EQ(coordinator_->GetPlan(ended)->status().state(), PLAN_STATE_CANCELLED);
  const std::string live = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  ASSERT_EQ(coordinator_->history().Read(ended, "core")->size(), 1u);
  auto jobs_on_metrics = [&](const std::string& id) {
    int n = 0;
    for (const MetricsSnapshot::Job& j : coordinator_->Metrics().jobs) n += j.plan_id == id;
    return n;
  };
  ASSERT_EQ(jobs_on_metrics(ended), 2);

  now_ += absl::ToInt64Milliseconds(absl::Hours(1)) - 1;
  coordinator_->Tick();
  EXPECT_TRUE(coordinator_->GetPlan(ended).ok()) << "kept until the retention has passed";
  now_ += 1;
  coordinator_->Tick();
  absl::StatusOr<GetPlanResponse> gone = coordinator_->GetPlan(ended);
  ASSERT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("expired after retention"), std::string::npos) << gone.status();
  EXPECT_NE(gone.status().message().find("--plan-retention"), std::string::npos) << gone.status();
  EXPECT_EQ(coordinator_->ListCheckpoints(ended, "").status().code(), absl::StatusCode::kNotFound);
  uint64_t version = 0;
  EXPECT_EQ(coordinator_->WaitForChange(ended, &version, absl::Milliseconds(1)).status().code(),
            absl::StatusCode::kNotFound);
  const ListPlansResponse plans = coordinator_->ListPlans(/*include_finished=*/true);
  ASSERT_EQ(plans.plans_size(), 1);
  EXPECT_EQ(plans.plans(0).plan_id(), live);
  EXPECT_EQ(jobs_on_metrics(ended), 0);
  EXPECT_EQ(jobs_on_metrics(live), 2);
  EXPECT_TRUE(coordinator_->history().Read(ended, "core")->empty());
  EXPECT_TRUE(std::filesystem::exists(final_dir)) << "checkpoint files stay on disk";
  // Durably: neither its plan record nor its checkpoint records are in the store.
  absl::StatusOr<StoreContents> contents = store_->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->plans.size(), 1u);
  EXPECT_EQ(contents->plans[0].status().plan_id(), live);
  for (const CheckpointInfo& c : contents->checkpoints) EXPECT_NE(c.plan_id(), ended);
  int history_keys = 0;
  ASSERT_TRUE(store_->Scan(std::string(Store::kHistoryPrefix) + ended + "/", [&](auto, auto) {
    ++history_keys;
    return true;
  }).ok());
  EXPECT_EQ(history_keys, 0);

  // After a restart the id still reads as expired (told from its sequence number); an id that
  // never was one is plainly unknown.
  Open();
  gone = coordinator_->GetPlan(ended);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("expired after retention"), std::string::npos) << gone.status();
  absl::StatusOr<GetPlanResponse> never = coordinator_->GetPlan("twostage-99");
  EXPECT_EQ(never.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(never.status().message().find("expired"), std::string::npos) << never.status();
  EXPECT_TRUE(coordinator_->GetPlan(live).ok());
}

// The retention counts from the end time in the store: a restart neither restarts it nor skips
// it. A backlog is forgotten a bounded number of plans per tick.
TEST_F(CoordinatorTest, RetentionCountsFromTheDurableEndTimeAndIsBoundedPerTick) {
  plan_retention_ = absl::Hours(1);
  Open();
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(*coordinator_->SubmitPlan(plan_, "plan.yaml"));
    ASSERT_TRUE(coordinator_->CancelPlan(ids.back(), "").ok());
  }
  const int64_t ended_ms = now_;
  now_ = ended_ms + absl::ToInt64Milliseconds(absl::Minutes(59));
  Open();
  coordinator_->Tick();
  EXPECT_EQ(coordinator_->ListPlans(true).plans_size(), 20) << "59 minutes after they ended";
  now_ = ended_ms + absl::ToInt64Milliseconds(absl::Hours(1));
  coordinator_->Tick();
  const int left = coordinator_->ListPlans(true).plans_size();
  EXPECT_GT(left, 0) << "at most a bounded number per tick";
  EXPECT_LT(left, 20);
  for (int i = 0; i < 5; ++i) coordinator_->Tick();
  EXPECT_EQ(coordinator_->ListPlans(true).plans_size(), 0);
  Open();
  EXPECT_EQ(coordinator_->ListPlans(true).plans_size(), 0) << "forgotten durably";
}

// Without a retention (the library default; loom-coordinator --plan-retention 0) nothing expires.
TEST_F(CoordinatorTest, ARetentionOfZeroKeepsPlansForever) {
  const std::string id = *coordinator_->SubmitPlan(plan_, "plan.yaml");
  ASSERT_TRUE(coordinator_->CancelPlan(id, "").ok());
  now_ += absl::ToInt64Milliseconds(absl::Hours(24 * 365));
  coordinator_->Tick();
  EXPECT_TRUE(coordinator_->GetPlan(id).ok());
}

}  // namespace
}  // namespace loom::coordinator
