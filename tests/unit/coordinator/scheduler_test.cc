#include "coordinator/scheduler.h"

#include <gtest/gtest.h>

namespace loom::coordinator {
namespace {

FreeWorker W(const std::string& id, std::vector<int> free, int total) { return {id, std::move(free), total}; }

TEST(Scheduler, GangPlacesEveryRankOrNone) {
  const auto d = Schedule({{"a", 2, 1, 1}}, {W("w1", {0, 1}, 2), W("w2", {1}, 2)});
  ASSERT_EQ(d.size(), 1u);
  ASSERT_TRUE(d[0].placed);
  ASSERT_EQ(d[0].ranks.size(), 2u);
  // Best fit: w2's single free slot first, then w1 (the job fills holes before large blocks).
  EXPECT_EQ(d[0].ranks[0].worker_id, "w2");
  EXPECT_EQ(d[0].ranks[0].device_index, 1);
  EXPECT_EQ(d[0].ranks[1].worker_id, "w1");

  const auto none = Schedule({{"big", 4, 1, 1}}, {W("w1", {0, 1}, 2), W("w2", {1}, 2)});
  EXPECT_FALSE(none[0].placed);
  EXPECT_TRUE(none[0].ranks.empty());
  EXPECT_EQ(none[0].reason, "waiting for 4 free slots (3 free)");
}

TEST(Scheduler, TensorParallelGroupsStayOnOneWorker) {
  // 2 free slots in total, but not on one worker: a tp=2 group cannot be split.
  const auto split = Schedule({{"tp", 1, 2, 1}}, {W("w1", {1}, 2), W("w2", {0}, 2)});
  EXPECT_FALSE(split[0].placed);
  EXPECT_EQ(split[0].reason,
            "waiting for workers with 2 free slots per tensor-parallel group (largest has 1)");
  // dp=2 x tp=2 on two 2-slot workers: ranks 0,1 together and 2,3 together.
  const auto d = Schedule({{"tp", 2, 2, 1}}, {W("w1", {0, 1}, 2), W("w2", {0, 1}, 2)});
  ASSERT_TRUE(d[0].placed);
  EXPECT_EQ(d[0].ranks[0].worker_id, d[0].ranks[1].worker_id);
  EXPECT_EQ(d[0].ranks[2].worker_id, d[0].ranks[3].worker_id);
  EXPECT_NE(d[0].ranks[0].worker_id, d[0].ranks[2].worker_id);
  // A group larger than any worker can never run: said so.
  const auto never = Schedule({{"tp8", 1, 8, 1}}, {W("w1", {0, 1}, 2)});
  EXPECT_EQ(never[0].reason, "needs a worker with 8 slots for a tensor-parallel group; the largest has 2");
}

TEST(Scheduler, AnElasticJobComesBackOnTheLargestDivisorOfItsDpThatFits) {
  // Four ranks asked, two workers of two slots, one of them lost: dp 2 on the survivor.
  const auto lost = Schedule({{"e", 4, 1, 1, /*elastic=*/true}}, {W("w1", {0, 1}, 2)});
  ASSERT_TRUE(lost[0].placed) << lost[0].reason;
  EXPECT_EQ(lost[0].dp, 2);
  EXPECT_EQ(lost[0].ranks.size(), 2u);
  // Slots busy rather than gone: the same.
  const auto busy = Schedule({{"e", 4, 1, 1, true}}, {W("w1", {0, 1}, 2), W("w2", {}, 2)});
  ASSERT_TRUE(busy[0].placed);
  EXPECT_EQ(busy[0].dp, 2);
  // Not elastic: it waits for its four.
  const auto fixed = Schedule({{"f", 4, 1, 1}}, {W("w1", {0, 1}, 2), W("w2", {}, 2)});
  EXPECT_FALSE(fixed[0].placed);
  EXPECT_EQ(fixed[0].reason, "waiting for 4 free slots (2 free)");
  // The full layout when it fits.
  const auto full = Schedule({{"e", 4, 1, 1, true}}, {W("w1", {0, 1}, 2), W("w2", {0, 1}, 2)});
  EXPECT_EQ(full[0].dp, 4);
  // Divisors only (the global batch must still split evenly): dp 3 on two slots runs as dp 1.
  const auto three = Schedule({{"e", 3, 1, 1, true}}, {W("w1", {0, 1}, 2)});
  ASSERT_TRUE(three[0].placed);
  EXPECT_EQ(three[0].dp, 1);
  // Tensor-parallel groups still stay whole: dp 2 x tp 2 on one two-slot worker is dp 1.
  const auto tp = Schedule({{"e", 2, 2, 1, true}}, {W("w1", {0, 1}, 2), W("w2", {0}, 2)});
  ASSERT_TRUE(tp[0].placed);
  EXPECT_EQ(tp[0].dp, 1);
  EXPECT_EQ(tp[0].ranks[0].worker_id, "w1");
  EXPECT_EQ(tp[0].ranks[1].worker_id, "w1");
}

TEST(Scheduler, FifoOrderBlocksLaterJobsButNotBehindImpossibleOnes) {
  // The caller orders by priority then submission; the first job that does not fit now blocks
  // the ones behind it, even if they would fit (no backfill, so large jobs are not starved).
  const auto d = Schedule({{"first", 1, 1, 1}, {"large", 3, 1, 1}, {"small", 1, 1, 1}}, {W("w1", {0, 1}, 3)});
  EXPECT_TRUE(d[0].placed);
  EXPECT_FALSE(d[1].placed);
  EXPECT_EQ(d[1].reason, "waiting for 3 free slots (1 free)");
  EXPECT_FALSE(d[2].placed);
  EXPECT_EQ(d[2].reason, "queued behind large");
  // A job larger than the whole cluster waits with that reason and does not block others.
  const auto e = Schedule({{"huge", 16, 1, 1}, {"small", 1, 1, 1}}, {W("w1", {0}, 1)});
  EXPECT_FALSE(e[0].placed);
  EXPECT_EQ(e[0].reason, "needs 16 slots; the live workers have 1");
  EXPECT_TRUE(e[1].placed);
}

TEST(Scheduler, PlacementsConsumeSlotsInOrder) {
  const auto d = Schedule({{"hi", 1, 1, 1}, {"lo", 1, 1, 1}}, {W("w1", {3}, 4)});
  EXPECT_TRUE(d[0].placed);
  EXPECT_EQ(d[0].ranks[0].device_index, 3);
  EXPECT_FALSE(d[1].placed);
  EXPECT_EQ(d[1].reason, "waiting for 1 free slots (0 free)");
}

}  // namespace
}  // namespace loom::coordinator
