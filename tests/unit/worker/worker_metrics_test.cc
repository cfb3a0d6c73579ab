// WorkerMetrics: job-global values come once per job (rank 0, no `rank` label) and a rank's
// series go away when it exits.
#include "worker/daemon/worker_metrics.h"

#include <string>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace loom::worker {
namespace {

std::string Scrape(WorkerMetrics& m) {
  return prometheus::TextSerializer().Serialize(m.registry()->Collect());
}

loom::v1::Progress Report(int rank) {
  loom::v1::Progress p;
  p.mutable_rank()->set_job_id("job-1");
  p.mutable_rank()->set_rank(rank);
  p.set_step(3);
  p.set_tokens(768);
  p.set_loss(2.5);
  p.set_tokens_per_second(100);
  (*p.mutable_mix_weights())["english"] = 1;
  (*p.mutable_source_tokens())["english"] = 768;
  (*p.mutable_eval_loss())["math"] = 1.75;
  (*p.mutable_eval_metrics())["sft_math/accuracy"] = 0.5;
  (*p.mutable_train_metrics())["dpo/margin"] = 0.25;
  return p;
}

TEST(WorkerMetricsTest, GlobalValuesOncePerJobWithoutRankLabel) {
  WorkerMetrics m;
  for (int rank = 0; rank < 4; ++rank) m.OnProgress("plan-a", "core", Report(rank));
  const std::string text = Scrape(m);
  EXPECT_NE(text.find("loom_train_tokens_total{plan=\"plan-a\",stage=\"core\"} 768"), std::string::npos)
      << text;
  EXPECT_NE(text.find("loom_data_tokens_total{plan=\"plan-a\",source=\"english\",stage=\"core\"} 768"),
            std::string::npos)
      << text;
  for (const char* series : {"loom_eval_loss{plan=\"plan-a\",set=\"math\",stage=\"core\"} 1.75",
                             "loom_eval_accuracy{plan=\"plan-a\",set=\"sft_math\",stage=\"core\"} 0.5",
                             "loom_train_dpo_reward_margin{plan=\"plan-a\",stage=\"core\"} 0.25",
                             "loom_train_loss{plan=\"plan-a\",stage=\"core\"} 2.5"}) {
    EXPECT_NE(text.find(series), std::string::npos) << series << "\n" << text;
  }
  EXPECT_EQ(text.find("rank="), std::string::npos) << text;
}

TEST(WorkerMetricsTest, RankExitRemovesItsSeries) {
  WorkerMetrics m;
  m.OnProgress("plan-a", "core", Report(0));
  ASSERT_NE(Scrape(m).find("loom_train_loss{"), std::string::npos);
  loom::v1::RankExit exit;
  exit.mutable_rank()->set_job_id("job-1");
  exit.mutable_rank()->set_rank(0);
  m.OnRankExit(exit);
  const std::string text = Scrape(m);
  for (const char* name : {"loom_train_loss{", "loom_train_tokens_total{", "loom_data_mix_weight{",
                           "loom_data_tokens_total{", "loom_train_step{", "loom_eval_loss{",
                           "loom_eval_accuracy{", "loom_train_dpo_reward_margin{"}) {
    EXPECT_EQ(text.find(name), std::string::npos) << name << "\n" << text;
  }
  EXPECT_NE(text.find("loom_worker_rank_exits_total{outcome=\"ok\"} 1"), std::string::npos) << text;
  // A later job starting its counter from zero is counted from zero, not from the old total.
  m.OnProgress("plan-a", "core", Report(0));
  EXPECT_NE(Scrape(m).find("loom_train_tokens_total{plan=\"plan-a\",stage=\"core\"} 768"), std::string::npos);
}

loom::v1::Progress Timed(int rank, double compute) {
  loom::v1::Progress p = Report(rank);
  p.set_step_seconds(0.5);
  p.set_step_compute_seconds(compute);
  p.set_step_communication_wait_seconds(0.25);
  p.set_step_data_wait_seconds(0.01);
  return p;
}

TEST(WorkerMetricsTest, EveryRankExportsItsOwnTimingsAndRankZeroTheStepHistogram) {
  WorkerMetrics m;
  const double compute[] = {0.1, 0.2, 0.3};
  for (int rank = 0; rank < 3; ++rank) m.OnProgress("plan-a", "core", Timed(rank, compute[rank]));
  const std::string text = Scrape(m);
  for (const char* series :
       {"loom_rank_step_compute_seconds{plan=\"plan-a\",rank=\"0\",stage=\"core\"} 0.1",
        "loom_rank_step_compute_seconds{plan=\"plan-a\",rank=\"2\",stage=\"core\"} 0.3",
        "loom_rank_step_communication_wait_seconds{plan=\"plan-a\",rank=\"1\",stage=\"core\"} 0.25",
        "loom_rank_step_data_wait_seconds{plan=\"plan-a\",rank=\"2\",stage=\"core\"} 0.01",
        "loom_train_step_duration_seconds_count{plan=\"plan-a\",stage=\"core\"} 1",
        "loom_train_step_duration_seconds_sum{plan=\"plan-a\",stage=\"core\"} 0.5"}) {
    EXPECT_NE(text.find(series), std::string::npos) << series << "\n" << text;
  }
  // A report of measures alone (no step timing) makes no timing series.
  WorkerMetrics untimed;
  untimed.OnProgress("plan-a", "core", Report(1));
  EXPECT_EQ(Scrape(untimed).find("loom_rank_step_"), std::string::npos);

  loom::v1::RankExit exit;
  exit.mutable_rank()->set_job_id("job-1");
  exit.mutable_rank()->set_rank(2);
  m.OnRankExit(exit);
  std::string after = Scrape(m);
  EXPECT_EQ(after.find("rank=\"2\""), std::string::npos) << after;
  EXPECT_NE(after.find("rank=\"1\""), std::string::npos) << after;
  exit.mutable_rank()->set_rank(0);
  m.OnRankExit(exit);
  after = Scrape(m);
  EXPECT_EQ(after.find("loom_train_step_duration_seconds_count{"), std::string::npos) << after;
}

TEST(WorkerMetricsTest, TrainMeasuresAreMetricsOfTheirOwnWithUnitsInTheName) {
  EXPECT_EQ(TrainMeasureMetric("dpo/accuracy").name, "loom_train_dpo_accuracy_ratio");
  EXPECT_EQ(TrainMeasureMetric("rl/kl").name, "loom_train_rl_kl_nats");
  EXPECT_EQ(TrainMeasureMetric("new/thing-x").name, "loom_train_new_thing_x");
  WorkerMetrics m;
  loom::v1::Progress p = Report(0);
  (*p.mutable_train_metrics())["dpo/accuracy"] = 0.75;
  m.OnProgress("plan-a", "core", p);
  const std::string text = Scrape(m);
  EXPECT_NE(text.find("loom_train_dpo_accuracy_ratio{plan=\"plan-a\",stage=\"core\"} 0.75"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("loom_train_metric"), std::string::npos) << text;
  EXPECT_NE(text.find("loom_build_info{version=\""), std::string::npos) << text;
}

TEST(WorkerMetricsTest, MfuOncePerJobFromRankZeroAndGoneWithIt) {
  WorkerMetrics m;
  m.SetPeakFlops(2.5e10);
  for (int rank = 0; rank < 2; ++rank) {
    loom::v1::Progress p = Timed(rank, 0.1);
    p.set_model_flops_utilization(rank == 0 ? 0.375 : 0.9);  // a rank's own figure is never shown
    m.OnProgress("plan-a", "core", p);
  }
  std::string text = Scrape(m);
  EXPECT_NE(text.find("loom_train_mfu_ratio{plan=\"plan-a\",stage=\"core\"} 0.375"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("0.9\n"), std::string::npos) << text;
  EXPECT_NE(text.find("loom_worker_peak_flops 25000000000"), std::string::npos) << text;
  loom::v1::RankExit exit;
  exit.mutable_rank()->set_job_id("job-1");
  exit.mutable_rank()->set_rank(0);
  m.OnRankExit(exit);
  text = Scrape(m);
  EXPECT_EQ(text.find("loom_train_mfu_ratio{"), std::string::npos) << text;
  EXPECT_NE(text.find("loom_worker_peak_flops 25000000000"), std::string::npos) << text;
  // Unknown (0): no series rather than a misleading zero.
  m.OnProgress("plan-a", "core", Timed(0, 0.1));
  EXPECT_EQ(Scrape(m).find("loom_train_mfu_ratio{"), std::string::npos);
}

TEST(WorkerMetricsTest, CheckpointSaveTimesPerJobGoWithTheJobsLastRank) {
  WorkerMetrics m;
  loom::v1::CheckpointReport report;
  report.mutable_rank()->set_job_id("job-1");
  report.set_save_seconds(0.2);
  for (int rank = 0; rank < 2; ++rank) {
    report.mutable_rank()->set_rank(rank);
    m.OnCheckpoint("plan-a", "core", report);
  }
  report.mutable_rank()->set_job_id("job-2");
  report.mutable_rank()->set_rank(0);
  m.OnCheckpoint("plan-b", "sft", report);
  std::string text = Scrape(m);
  EXPECT_NE(text.find("loom_checkpoint_save_seconds_count{plan=\"plan-a\",stage=\"core\"} 2"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("loom_checkpoint_save_seconds_count{plan=\"plan-b\",stage=\"sft\"} 1"),
            std::string::npos)
      << text;
  loom::v1::RankExit exit;
  exit.mutable_rank()->set_job_id("job-1");
  exit.mutable_rank()->set_rank(1);
  m.OnRankExit(exit);
  text = Scrape(m);
  EXPECT_NE(text.find("loom_checkpoint_save_seconds_count{plan=\"plan-a\",stage=\"core\"} 2"),
            std::string::npos)
      << "rank 0 of the job still runs\n"
      << text;
  exit.mutable_rank()->set_rank(0);
  m.OnRankExit(exit);
  text = Scrape(m);
  EXPECT_EQ(text.find("plan=\"plan-a\""), std::string::npos) << text;
  EXPECT_NE(text.find("loom_checkpoint_save_seconds_count{plan=\"plan-b\",stage=\"sft\"} 1"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace loom::worker
