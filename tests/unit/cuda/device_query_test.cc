#include "kernels/cuda/device_query.h"

#include <gtest/gtest.h>

namespace loom::cuda {
namespace {

TEST(CudaDeviceQuery, NcclLibraryMatchesHeaderMajorMinor) {
  // NCCL encodes versions as major*10000 + minor*100 + patch (2.9 and later).
  const int linked = LinkedNcclVersion();
  const int header = HeaderNcclVersion();
  ASSERT_GT(linked, 20000) << "libnccl did not report a version";
  EXPECT_EQ(linked / 100, header / 100) << "linked NCCL " << linked << " vs nccl.h " << header;
}

TEST(CudaDeviceQuery, ListsDevicesOrSaysWhyNot) {
  const DeviceQuery q = QueryDevices();
  if (!q.error.empty()) {
    EXPECT_TRUE(q.devices.empty());
    GTEST_SKIP() << "no CUDA device here: " << q.error;
  }
  for (const DeviceInfo& d : q.devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.memory_bytes, 0);
    EXPECT_GE(d.compute_major, 7) << d.name;
  }
}

}  // namespace
}  // namespace loom::cuda
