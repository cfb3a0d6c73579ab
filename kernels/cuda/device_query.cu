#include "kernels/cuda/device_query.h"

#include <cuda_runtime.h>
#include <nccl.h>

namespace loom::cuda {

DeviceQuery QueryDevices() {
  DeviceQuery out;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    out.error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo info;
    info.index = i;
    info.name = prop.name;
    info.memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.multiprocessors = prop.multiProcessorCount;
    out.devices.push_back(info);
  }
  return out;
}

int LinkedNcclVersion() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return 0;
  return version;
}

int HeaderNcclVersion() { return NCCL_VERSION_CODE; }

}  // namespace loom::cuda
