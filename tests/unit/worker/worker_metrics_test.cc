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
  for (const char* series : {"loom_eval_loss{plan=\"plan-a\",source=\"math\",stage=\"core\"} 1.75",
                             "loom_eval_accuracy{plan=\"plan-a\",set=\"sft_math\",stage=\"core\"} 0.5",
                             "loom_train_metric{name=\"dpo/margin\",plan=\"plan-a\",stage=\"core\"} 0.25",
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
                           "loom_eval_accuracy{", "loom_train_metric{"}) {
    EXPECT_EQ(text.find(name), std::string::npos) << name << "\n" << text;
  }
  EXPECT_NE(text.find("loom_worker_rank_exits_total{outcome=\"ok\"} 1"), std::string::npos) << text;
  // A later job starting its counter from zero is counted from zero, not from the old total.
  m.OnProgress("plan-a", "core", Report(0));
  EXPECT_NE(Scrape(m).find("loom_train_tokens_total{plan=\"plan-a\",stage=\"core\"} 768"), std::string::npos);
}

}  // namespace
}  // namespace loom::worker
