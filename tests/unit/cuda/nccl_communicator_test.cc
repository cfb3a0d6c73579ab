// The NCCL backend: on a machine without a GPU it refuses with CUDA's reason; with one device a
// group of one runs every collective for real (the smoke test of issue 6); with two or more, two
// ranks (threads, one device each) meet through the store and sum.
#include "worker/engine/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/device_query.h"
#include "tests/unit/data/data_test_util.h"

namespace loom::engine {
namespace {

int Devices() { return static_cast<int>(cuda::QueryDevices().devices.size()); }

TEST(NcclCommunicator, WithoutADeviceItSaysWhy) {
  if (Devices() > 0) GTEST_SKIP() << "this machine has a GPU";
  data::testing::TempDir dir;
  auto store = NewDirectoryKeyValueStore(dir.path());
  NcclOptions o;
  o.prefix = "nccl";
  auto comm = NewNcclCommunicator(store.get(), o);
  ASSERT_FALSE(comm.ok());
  EXPECT_NE(comm.status().message().find("cuda"), std::string::npos) << comm.status();
}

TEST(NcclCommunicator, AGroupOfOneRunsEveryCollectiveOnTheDevice) {
  if (Devices() < 1) GTEST_SKIP() << "no CUDA device here: " << cuda::QueryDevices().error;
  data::testing::TempDir dir;
  auto store = NewDirectoryKeyValueStore(dir.path());
  NcclOptions o;
  o.prefix = "nccl";
  auto comm = NewNcclCommunicator(store.get(), o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  const int64_t n = 1 << 20;
  std::vector<float> host(n);
  for (int64_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000);
  float *a = nullptr, *b = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&a), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&b), n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(a, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_TRUE((*comm)->AllReduceSum(a, n).ok());
  ASSERT_TRUE((*comm)->AllGather(a, n, b).ok());
  ASSERT_TRUE((*comm)->ReduceScatterSum(b, n, a).ok());
  ASSERT_TRUE((*comm)->Broadcast(a, n, 0).ok());
  ASSERT_TRUE((*comm)->Barrier().ok());
  std::vector<float> back(n);
  ASSERT_EQ(cudaMemcpy(back.data(), a, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back, host);
  cudaFree(a);
  cudaFree(b);
}

TEST(NcclCommunicator, TwoRanksOnTwoDevicesSum) {
  if (Devices() < 2) GTEST_SKIP() << "needs two CUDA devices (NCCL gives each rank its own)";
  data::testing::TempDir dir;
  const int64_t n = 1 << 20;
  std::vector<std::vector<float>> results(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto store = NewDirectoryKeyValueStore(dir.path());
      NcclOptions o;
      o.rank = r;
      o.size = 2;
      o.device = r;
      o.prefix = "nccl";
      auto comm = NewNcclCommunicator(store.get(), o);
      if (!comm.ok()) return;
      std::vector<float> host(n, static_cast<float>(r + 1));
      float* d = nullptr;
      cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(float));
      cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
      if ((*comm)->AllReduceSum(d, n).ok()) {
        results[r].resize(n);
        cudaMemcpy(results[r].data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
      }
      cudaFree(d);
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(results[r].size(), static_cast<size_t>(n)) << "rank " << r;
    EXPECT_EQ(results[r][n - 1], 3.0f);
  }
}

}  // namespace
}  // namespace loom::engine
