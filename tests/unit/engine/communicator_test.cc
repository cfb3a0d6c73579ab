// The Gloo backend's reduce-scatter and point-to-point calls, on real TCP over loopback: ranks are
// threads of this process, each with its own Gloo context, meeting through a directory store.
#include "worker/engine/parallel/communicator.h"

#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/engine/parallel/overlapped_all_reduce.h"
#include "worker/engine/parallel/shared_memory_reduce.h"
#include "tests/unit/data/data_test_util.h"
#include "tests/unit/engine/gloo_ranks.h"

namespace loom::engine {
namespace {

using testing::OnGlooRanks;

// Rank r's input, element i: distinct small integers, so sums are exact in float.
float Input(int rank, int64_t i) { return static_cast<float>(rank * 1000 + i % 997); }

void ExpectReduceScatter(int size, int64_t count) {
  std::vector<std::vector<float>> outs(size);
  const auto results = OnGlooRanks(size, [&](Communicator& c) {
    std::vector<float> in(size * count);
    for (int64_t i = 0; i < size * count; ++i) in[i] = Input(c.rank(), i);
    outs[c.rank()].assign(count, -1.0f);
    return c.ReduceScatterSum(in.data(), count, outs[c.rank()].data());
  });
  for (int r = 0; r < size; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    for (int64_t j = 0; j < count; ++j) {
      float expected = 0;
      for (int q = 0; q < size; ++q) expected += Input(q, r * count + j);
      ASSERT_EQ(outs[r][j], expected) << "rank " << r << " element " << j;
    }
  }
}

TEST(GlooCommunicator, ReduceScatterSumsEachRanksChunk) {
  ExpectReduceScatter(2, 1000);
  ExpectReduceScatter(3, 257);
  ExpectReduceScatter(4, 1);
}

TEST(GlooCommunicator, ReduceScatterThenAllGatherIsAnAllReduce) {
  // ZeRO-1's step in two halves gives what the all-reduce gives.
  constexpr int kSize = 3;
  constexpr int64_t kCount = 100;
  std::vector<std::vector<float>> gathered(kSize), reduced(kSize);
  const auto results = OnGlooRanks(kSize, [&](Communicator& c) {
    std::vector<float> in(kSize * kCount), mine(kCount);
    for (int64_t i = 0; i < kSize * kCount; ++i) in[i] = Input(c.rank(), i) * 0.37f;
    reduced[c.rank()] = in;
    gathered[c.rank()].resize(kSize * kCount);
    if (absl::Status s = c.ReduceScatterSum(in.data(), kCount, mine.data()); !s.ok()) return s;
    if (absl::Status s = c.AllGather(mine.data(), kCount, gathered[c.rank()].data()); !s.ok()) return s;
    return c.AllReduceSum(reduced[c.rank()].data(), kSize * kCount);
  });
  for (int r = 0; r < kSize; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    for (int64_t i = 0; i < kSize * kCount; ++i) EXPECT_NEAR(gathered[r][i], reduced[r][i], 1e-3) << i;
  }
}

TEST(GlooCommunicator, SendAndRecvPassDataAlongAPipeline) {
  // Rank r receives from r - 1 (tag = micro-batch), adds its rank, sends to r + 1: the last rank
  // sees 0 + 1 + ... + (size - 1) added to the first rank's data, for each micro-batch in order.
  constexpr int kSize = 3, kMicroBatches = 4;
  constexpr int64_t kCount = 4096;
  std::vector<float> last(kMicroBatches, -1);
  const auto results = OnGlooRanks(kSize, [&](Communicator& c) {
    std::vector<float> activations(kCount);
    for (uint32_t m = 0; m < kMicroBatches; ++m) {
      if (c.rank() == 0) {
        std::fill(activations.begin(), activations.end(), static_cast<float>(10 * m));
      } else if (absl::Status s = c.Recv(activations.data(), kCount, c.rank() - 1, m); !s.ok()) {
        return s;
      }
      for (float& a : activations) a += static_cast<float>(c.rank());
      if (c.rank() + 1 < c.size()) {
        if (absl::Status s = c.Send(activations.data(), kCount, c.rank() + 1, m); !s.ok()) return s;
      } else {
        last[m] = activations[kCount - 1];
      }
    }
    return absl::OkStatus();
  });
  for (const absl::Status& s : results) ASSERT_TRUE(s.ok()) << s;
  for (int m = 0; m < kMicroBatches; ++m) EXPECT_EQ(last[m], 10.0f * m + 0 + 1 + 2);
}

TEST(GlooCommunicator, ARecvWithoutASenderFailsAtTheTimeoutAndBadPeersAreRefused) {
  const auto results = OnGlooRanks(
      2,
      [&](Communicator& c) -> absl::Status {
        float x = 0;
        if (absl::Status s = c.Send(&x, 1, c.rank(), 0); s.code() != absl::StatusCode::kInvalidArgument) {
          return absl::InternalError(absl::StrCat("send to self: ", s.ToString()));
        }
        if (absl::Status s = c.Recv(&x, 1, 5, 0); s.code() != absl::StatusCode::kInvalidArgument) {
          return absl::InternalError(absl::StrCat("recv from rank 5: ", s.ToString()));
        }
        if (c.rank() == 1) {  // alive, but never sends (a peer that leaves instead: UNAVAILABLE at once)
          absl::SleepFor(absl::Seconds(4));
          return absl::OkStatus();
        }
        const auto start = absl::Now();
        absl::Status s = c.Recv(&x, 1, 1, 9);
        if (absl::Now() - start > absl::Seconds(3.5)) return absl::InternalError("waited past the timeout");
        return s;
      },
      absl::Seconds(2));
  EXPECT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(results[0].code(), absl::StatusCode::kDeadlineExceeded) << results[0];
}

TEST(SingleProcessCommunicator, ReduceScatterCopiesAndPointToPointHasNoPeer) {
  auto c = NewSingleProcessCommunicator();
  std::vector<float> in = {1, 2, 3}, out(3);
  ASSERT_TRUE(c->ReduceScatterSum(in.data(), 3, out.data()).ok());
  EXPECT_EQ(out, in);
  EXPECT_EQ(c->Send(in.data(), 3, 1, 0).code(), absl::StatusCode::kInvalidArgument);
}

// Float all-reduce, over TCP and through shared memory (the ranks share this host): exact sums of
// small integers on every rank, for a buffer of several pieces with an uneven last one, split
// three ways (parts of unequal size).
TEST(Communicator, AllReduceSumsExactlyOverTcpAndThroughSharedMemory) {
  const int64_t count = 3 * SharedMemoryReduce::kSlotFloats + 5;
  for (bool shared_memory : {false, true}) {
    std::vector<std::vector<float>> outs(3);
    const auto results = OnGlooRanks(
        3,
        [&](Communicator& c) -> absl::Status {
          std::vector<float>& v = outs[c.rank()];
          v.resize(count);
          for (int64_t i = 0; i < count; ++i) v[i] = Input(c.rank(), i);
          // Twice: the second call reuses the slots the first left.
          if (absl::Status s = c.AllReduceSum(v.data(), count); !s.ok()) return s;
          for (float& x : v) x = -x;
          return c.AllReduceSum(v.data(), count);
        },
        absl::Seconds(20), shared_memory);
    for (int r = 0; r < 3; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r];
      for (int64_t i = 0; i < count; ++i) {
        const float sum = Input(0, i) + Input(1, i) + Input(2, i);
        ASSERT_EQ(outs[r][i], -3 * sum) << "rank " << r << " element " << i << " shared memory " << shared_memory;
      }
    }
  }
}

// The shared-memory path itself: ranks of one host get a segment (not the TCP fallback), sum
// exactly, and a peer that never arrives fails the call at the timeout instead of hanging.
TEST(SharedMemoryReduce, RanksOnThisHostShareASegmentAndAMissingPeerTimesOut) {
  data::testing::TempDir dir;
  std::unique_ptr<KeyValueStore> store = NewDirectoryKeyValueStore(dir.path());
  std::vector<std::unique_ptr<SharedMemoryReduce>> ranks(2);
  std::vector<absl::Status> joined(2);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        auto j = SharedMemoryReduce::Join(store.get(), "shm", r, 2, absl::Seconds(1));
        joined[r] = j.status();
        if (j.ok()) ranks[r] = std::move(*j);
      });
    }
    for (auto& t : threads) t.join();
  }
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(joined[r].ok()) << joined[r];
    ASSERT_NE(ranks[r], nullptr) << "ranks of one process must share a segment";
  }
  std::atomic<bool> aborted{false};
  std::vector<std::vector<float>> data = {std::vector<float>(1000, 1.5f), std::vector<float>(1000, 2.0f)};
  {
    std::vector<std::thread> threads;
    std::vector<absl::Status> summed(2);
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] { summed[r] = ranks[r]->Sum(data[r].data(), 1000, aborted); });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < 2; ++r) {
      ASSERT_TRUE(summed[r].ok()) << summed[r];
      EXPECT_EQ(data[r][999], 3.5f);
    }
  }
  const absl::Time start = absl::Now();
  const absl::Status alone = ranks[0]->Sum(data[0].data(), 1000, aborted);  // rank 1 never comes
  EXPECT_EQ(alone.code(), absl::StatusCode::kDeadlineExceeded) << alone;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// Bucketed all-reduce beside a backward pass: the ranges reported (downwards, adjacent ones packed
// into buckets, a gap closing a bucket) are summed over the ranks; what was never reported is not.
TEST(OverlappedAllReduce, SumsTheReportedRangesInBucketsAndNothingElse) {
  const int64_t n = 10000;
  std::vector<std::vector<float>> grads(2);
  const auto results = OnGlooRanks(2, [&](Communicator& c) -> absl::Status {
    std::vector<float>& g = grads[c.rank()];
    g.assign(n, static_cast<float>(c.rank() + 1));
    OverlappedAllReduce overlap(&c, /*bucket_floats=*/3000);
    for (int step = 0; step < 2; ++step) {  // the thread and its buckets are reused across steps
      overlap.Start(g.data());
      overlap.Ready(8000, 10000);
      overlap.Ready(6000, 8000);  // packed: 4000 >= 3000, sent
      overlap.Ready(100, 6000);
      overlap.Ready(0, 50);  // not adjacent: [100, 6000) is sent, [0, 50) waits for Finish
      if (absl::Status s = overlap.Finish(); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r];
    EXPECT_EQ(grads[r][0], 6.0f);       // 1 + 2 = 3 after the first step, 3 + 3 after the second
    EXPECT_EQ(grads[r][75], r + 1.0f);  // never reported
    EXPECT_EQ(grads[r][9999], 6.0f);
    EXPECT_EQ(grads[r][5000], 6.0f);
  }
}

}  // namespace
}  // namespace loom::engine
