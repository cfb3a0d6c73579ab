#include "coordinator/store.h"

#include <filesystem>

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/store_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(Store, RoundTripSurvivesReopen) {
  const std::string dir = FreshDir("round_trip");
  loom::v1::PlanRecord plan;
  plan.mutable_plan()->set_name("p");
  plan.set_seq(3);
  plan.mutable_status()->set_plan_id("p-3");
  auto* job = plan.mutable_status()->add_jobs();
  job->set_job_id("p-3/core");
  job->set_state(loom::v1::JOB_STATE_RUNNING);
  job->add_transitions()->set_reason("submitted");
  plan.add_runtime()->add_ranks()->set_worker_id("w1");
  loom::v1::PlanRecord older = plan;
  older.set_seq(1);
  older.mutable_status()->set_plan_id("p-1");
  loom::v1::CheckpointInfo ckpt;
  ckpt.set_plan_id("p-3");
  ckpt.set_stage("core");
  ckpt.set_step(50);
  ckpt.set_path("/x/step-000050");
  loom::v1::WorkerStatus worker;
  worker.set_worker_id("w1");
  worker.set_slots(2);
  {
    absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    StoreWrite write;
    write.plans = {&plan, &older};
    write.checkpoints = {&ckpt};
    write.workers = {&worker};
    write.plan_seq = 3;
    ASSERT_TRUE((*store)->Write(write).ok());
    // A second change of the same plan replaces the record.
    job->set_state(loom::v1::JOB_STATE_SUCCEEDED);
    StoreWrite update;
    update.plans = {&plan};
    ASSERT_TRUE((*store)->Write(update).ok());
    // A second opener of the same directory is refused while the first holds it.
    absl::StatusOr<std::unique_ptr<Store>> second = Store::Open(dir);
    EXPECT_FALSE(second.ok());
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  absl::StatusOr<StoreContents> c = (*store)->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->plans.size(), 2u);
  EXPECT_EQ(c->plans[0].status().plan_id(), "p-1");  // ordered by submission
  EXPECT_EQ(c->plans[1].SerializeAsString(), plan.SerializeAsString());
  EXPECT_EQ(c->plans[1].status().jobs(0).state(), loom::v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(c->checkpoints.size(), 1u);
  EXPECT_EQ(c->checkpoints[0].SerializeAsString(), ckpt.SerializeAsString());
  ASSERT_EQ(c->workers.size(), 1u);
  EXPECT_EQ(c->workers[0].slots(), 2);
  EXPECT_EQ(c->plan_seq, 3);
}

// An expired plan goes whole, its checkpoint records with it, and nothing of a plan whose id
// extends it ("p-1" against "p-10").
TEST(Store, DeletedPlansTakeTheirCheckpointRecords) {
  const std::string dir = FreshDir("deleted_plans");
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<loom::v1::PlanRecord> plans(2);
  std::vector<loom::v1::CheckpointInfo> checkpoints(4);
  const std::vector<std::string> ids = {"p-1", "p-10"};
  StoreWrite write;
  for (int i = 0; i < 2; ++i) {
    plans[i].set_seq(i == 0 ? 1 : 10);
    plans[i].mutable_status()->set_plan_id(ids[i]);
    write.plans.push_back(&plans[i]);
    for (int k = 0; k < 2; ++k) {
      loom::v1::CheckpointInfo& c = checkpoints[i * 2 + k];
      c.set_plan_id(ids[i]);
      c.set_stage(k == 0 ? "core" : "anneal");
      c.set_step(10 * (k + 1));
      write.checkpoints.push_back(&c);
    }
  }
  ASSERT_TRUE((*store)->Write(write).ok());
  StoreWrite forget;
  forget.deleted_plans = {"p-1"};
  ASSERT_TRUE((*store)->Write(forget).ok());
  absl::StatusOr<StoreContents> c = (*store)->Load();
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->plans.size(), 1u);
  EXPECT_EQ(c->plans[0].status().plan_id(), "p-10");
  ASSERT_EQ(c->checkpoints.size(), 2u);
  for (const loom::v1::CheckpointInfo& kept : c->checkpoints) EXPECT_EQ(kept.plan_id(), "p-10");
}

TEST(Store, KeysSortCheckpointsByStep) {
  EXPECT_LT(Store::CheckpointKey("p-1", "core", 99), Store::CheckpointKey("p-1", "core", 100));
  EXPECT_EQ(Store::PlanKey("p-1"), "plan/p-1");
  EXPECT_EQ(Store::WorkerKey("w"), "worker/w");
}

}  // namespace
}  // namespace loom::coordinator
