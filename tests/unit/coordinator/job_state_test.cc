#include "coordinator/job_state.h"

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

using namespace loom::v1;

TEST(JobState, AllowsTheLifecycleAndRefusesImpossibleMoves) {
  EXPECT_TRUE(CanTransition(JOB_STATE_PENDING, JOB_STATE_SCHEDULED));
  EXPECT_TRUE(CanTransition(JOB_STATE_SCHEDULED, JOB_STATE_RUNNING));
  EXPECT_TRUE(CanTransition(JOB_STATE_RUNNING, JOB_STATE_RECOVERING));
  EXPECT_TRUE(CanTransition(JOB_STATE_RECOVERING, JOB_STATE_SCHEDULED));
  EXPECT_TRUE(CanTransition(JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED));
  EXPECT_TRUE(CanTransition(JOB_STATE_SCHEDULED, JOB_STATE_SUCCEEDED));
  EXPECT_TRUE(CanTransition(JOB_STATE_PENDING, JOB_STATE_FAILED));
  EXPECT_TRUE(CanTransition(JOB_STATE_RECOVERING, JOB_STATE_CANCELLED));
  EXPECT_FALSE(CanTransition(JOB_STATE_PENDING, JOB_STATE_RUNNING));
  EXPECT_FALSE(CanTransition(JOB_STATE_PENDING, JOB_STATE_SUCCEEDED));
  EXPECT_FALSE(CanTransition(JOB_STATE_RECOVERING, JOB_STATE_RUNNING));
  EXPECT_FALSE(CanTransition(JOB_STATE_RUNNING, JOB_STATE_RUNNING));
  for (JobState terminal : {JOB_STATE_SUCCEEDED, JOB_STATE_FAILED, JOB_STATE_CANCELLED}) {
    EXPECT_TRUE(IsTerminal(terminal));
    for (int to = JOB_STATE_PENDING; to <= JOB_STATE_CANCELLED; ++to) {
      EXPECT_FALSE(CanTransition(terminal, static_cast<JobState>(to))) << terminal << " -> " << to;
    }
  }
}

TEST(JobState, TransitionRecordsTimeAttemptAndReason) {
  JobStatus job;
  job.set_job_id("p-1/core");
  job.set_state(JOB_STATE_PENDING);
  job.set_attempt(1);
  ASSERT_TRUE(Transition(&job, JOB_STATE_SCHEDULED, "placed", 1000).ok());
  ASSERT_TRUE(Transition(&job, JOB_STATE_RUNNING, "training", 2000).ok());
  job.set_attempt(2);
  const absl::Status refused = Transition(&job, JOB_STATE_SCHEDULED, "nope", 3000);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("running -> scheduled"), std::string::npos) << refused;
  EXPECT_EQ(job.state(), JOB_STATE_RUNNING);
  ASSERT_EQ(job.transitions_size(), 2);
  EXPECT_EQ(job.transitions(1).time_ms(), 2000);
  EXPECT_EQ(job.transitions(1).from_state(), JOB_STATE_SCHEDULED);
  EXPECT_EQ(job.transitions(1).to_state(), JOB_STATE_RUNNING);
  EXPECT_EQ(job.transitions(1).attempt(), 1);
  EXPECT_EQ(job.transitions(1).reason(), "training");
  EXPECT_EQ(job.reason(), "training");
}

TEST(JobState, PlanStateFollowsItsJobs) {
  PlanStatus plan;
  plan.add_jobs()->set_state(JOB_STATE_SUCCEEDED);
  plan.add_jobs()->set_state(JOB_STATE_RUNNING);
  EXPECT_EQ(DerivePlanState(plan), PLAN_STATE_ACTIVE);
  plan.mutable_jobs(1)->set_state(JOB_STATE_SUCCEEDED);
  EXPECT_EQ(DerivePlanState(plan), PLAN_STATE_SUCCEEDED);
  plan.add_jobs()->set_state(JOB_STATE_CANCELLED);
  EXPECT_EQ(DerivePlanState(plan), PLAN_STATE_CANCELLED);
  plan.add_jobs()->set_state(JOB_STATE_FAILED);
  EXPECT_EQ(DerivePlanState(plan), PLAN_STATE_FAILED);
}

}  // namespace
}  // namespace loom::coordinator
