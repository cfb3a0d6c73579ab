// What CUDA devices this process can use, and which NCCL it linked: the worker registers these
// with the coordinator (`--devices cuda:0,...`). Works, and says why not, on a machine with no GPU
// or no driver. Plain C++ (no Abseil) so that nvcc never sees Abseil headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace loom::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;          // e.g. "NVIDIA H100 80GB HBM3"
  int64_t memory_bytes = 0;  // total device memory
  int compute_major = 0;     // 9 for Hopper
  int compute_minor = 0;
  int multiprocessors = 0;
};

struct DeviceQuery {
  std::vector<DeviceInfo> devices;
  // Empty when the query worked (even with zero devices); else the CUDA runtime's reason, e.g.
  // "no CUDA-capable device is detected" or "CUDA driver version is insufficient".
  std::string error;
};

DeviceQuery QueryDevices();

// NCCL's version as NCCL encodes it (e.g. 22703 for 2.27.3), from the linked library.
int LinkedNcclVersion();
// The version of nccl.h this code was compiled against, same encoding.
int HeaderNcclVersion();

}  // namespace loom::cuda
