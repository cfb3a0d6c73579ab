// The worker's peak FLOP/s measurement (a short sgemm through Loom's kernel) and the MFU it feeds.
#include "worker/daemon/peak_flops.h"

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace loom::worker {
namespace {

TEST(PeakFlopsTest, MeasuresASanePositiveFigureWellWithinASecond) {
  const absl::Time start = absl::Now();
  const double peak = MeasurePeakFlops(1);
  const absl::Duration took = absl::Now() - start;
  // Any core of the last twenty years does more than 100 MFLOP/s in float32 GEMM, and no single
  // thread does 10 TFLOP/s.
  EXPECT_GT(peak, 1e8);
  EXPECT_LT(peak, 1e13);
  EXPECT_LT(took, absl::Seconds(1));
}

TEST(PeakFlopsTest, MfuIsAchievedOverThePeakOfTheJobsSlots) {
  // 1000 tokens/s x 6e6 FLOP per token over 2 slots of 1e10 FLOP/s: 30%.
  EXPECT_DOUBLE_EQ(ModelFlopsUtilization(1000, 6e6, 2, 1e10), 0.3);
  EXPECT_EQ(ModelFlopsUtilization(1000, 0, 2, 1e10), 0);  // the rank did not say
  EXPECT_EQ(ModelFlopsUtilization(1000, 6e6, 2, 0), 0);   // no peak
  EXPECT_EQ(ModelFlopsUtilization(0, 6e6, 2, 1e10), 0);   // no throughput yet
}

}  // namespace
}  // namespace loom::worker
