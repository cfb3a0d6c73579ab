#include "worker/engine/parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

absl::Status CudaError(cudaError_t e, const char* what) {
  return absl::InternalError(absl::StrCat("cuda: ", what, ": ", cudaGetErrorString(e)));
}

// A call was accepted: done, or running on the stream (non-blocking communicator).
bool Launched(ncclResult_t r) { return r == ncclSuccess || r == ncclInProgress; }

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, int rank, int size, int device, absl::Duration timeout,
                   std::string name)
      : comm_(comm), stream_(stream), rank_(rank), size_(size), device_(device), timeout_(timeout),
        name_(std::move(name)) {}
  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (scratch_ != nullptr) cudaFree(scratch_);
    if (comm_aborted_) {
    } else if (broken_ || aborted_) {
      ncclCommAbort(comm_);
    } else {
      ncclCommDestroy(comm_);
    }
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    return Run("all-reduce", ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_));
  }
  absl::Status AllReduceSum(double* data, int64_t count) override {
    return Run("all-reduce", ncclAllReduce(data, data, count, ncclFloat64, ncclSum, comm_, stream_));
  }
  absl::Status Broadcast(float* data, int64_t count, int root) override {
    return Run("broadcast", ncclBroadcast(data, data, count, ncclFloat32, root, comm_, stream_));
  }
  absl::Status AllGather(const float* in, int64_t count, float* out) override {
    return Run("all-gather", ncclAllGather(in, out, count, ncclFloat32, comm_, stream_));
  }
  absl::Status ReduceScatterSum(const float* in, int64_t count, float* out) override {
    return Run("reduce-scatter", ncclReduceScatter(in, out, count, ncclFloat32, ncclSum, comm_, stream_));
  }
  // NCCL matches point-to-point calls per peer in issue order; the tag is not needed to pair them.
  absl::Status Send(const float* data, int64_t count, int peer, uint32_t /*tag*/) override {
    LOOM_RETURN_IF_ERROR(CheckPeer("send", peer));
    return Run("send", ncclSend(data, count, ncclFloat32, peer, comm_, stream_));
  }
  absl::Status Recv(float* data, int64_t count, int peer, uint32_t /*tag*/) override {
    LOOM_RETURN_IF_ERROR(CheckPeer("recv", peer));
    return Run("recv", ncclRecv(data, count, ncclFloat32, peer, comm_, stream_));
  }
  absl::Status SendRecv(const float* send, int64_t send_count, int send_peer, uint32_t, float* recv,
                        int64_t recv_count, int recv_peer, uint32_t) override {
    LOOM_RETURN_IF_ERROR(CheckPeer("send", send_peer));
    LOOM_RETURN_IF_ERROR(CheckPeer("recv", recv_peer));
    ncclResult_t r = ncclGroupStart();
    if (Launched(r)) r = ncclSend(send, send_count, ncclFloat32, send_peer, comm_, stream_);
    if (Launched(r)) r = ncclRecv(recv, recv_count, ncclFloat32, recv_peer, comm_, stream_);
    const ncclResult_t end = ncclGroupEnd();
    return Run("send-recv", Launched(r) ? end : r);
  }
  absl::Status Barrier() override {
    if (scratch_ == nullptr) {
      if (cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(float)); e != cudaSuccess) return CudaError(e, "barrier");
    }
    return Run("barrier", ncclAllReduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, comm_, stream_));
  }
  void Abort() override { aborted_ = true; }

 private:
  absl::Status CheckPeer(const char* what, int peer) const {
    if (peer < 0 || peer >= size_ || peer == rank_) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": ", what, " with rank ", peer, " from rank ", rank_, " of ", size_));
    }
    return absl::OkStatus();
  }

  // Waits for the call just issued: its stream drains, or NCCL reports an error, or the timeout or
  // an abort ends the communicator.
  absl::Status Run(const char* what, ncclResult_t issued) {
    // A failed communicator is aborted at once: its kernels stop using the caller's buffers.
    auto fail = [&](absl::StatusCode code, const std::string& why) {
      broken_ = true;
      if (!comm_aborted_) ncclCommAbort(comm_);
      comm_aborted_ = true;
      return absl::Status(code, absl::StrCat(name_, ": ", what, " failed (rank ", rank_, " of ", size_, "): ", why));
    };
    if (aborted_) return absl::AbortedError(absl::StrCat(name_, ": ", what, " after abort"));
    if (broken_) return absl::UnavailableError(absl::StrCat(name_, ": ", what, " on a broken group"));
    if (!Launched(issued)) return fail(absl::StatusCode::kUnavailable, ncclGetErrorString(issued));
    const absl::Time deadline = MonotonicNow() + timeout_;
    while (true) {
      // Non-blocking: until NCCL stops answering ncclInProgress the call may not be on the stream
      // yet, and an empty stream would look finished.
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (!Launched(async)) return fail(absl::StatusCode::kUnavailable, ncclGetErrorString(async));
      if (async == ncclSuccess) {
        const cudaError_t e = cudaStreamQuery(stream_);
        if (e == cudaSuccess) return absl::OkStatus();
        if (e != cudaErrorNotReady) return fail(absl::StatusCode::kInternal, cudaGetErrorString(e));
      }
      if (aborted_) return fail(absl::StatusCode::kAborted, "aborted");
      if (MonotonicNow() > deadline) {
        return fail(absl::StatusCode::kDeadlineExceeded, absl::StrCat("timed out after ", absl::FormatDuration(timeout_)));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  int rank_, size_, device_;
  absl::Duration timeout_;
  std::string name_;
  float* scratch_ = nullptr;  // the barrier's one float
  std::atomic<bool> aborted_{false};
  bool broken_ = false;
  bool comm_aborted_ = false;  // ncclCommAbort has run
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> NewNcclCommunicator(KeyValueStore* store, const NcclOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: rank ", options.rank, " is not in a group of ", options.size));
  }
  if (cudaError_t e = cudaSetDevice(options.device); e != cudaSuccess) {
    return CudaError(e, absl::StrCat("device ", options.device).c_str());
  }
  // NCCL's unique id travels through the store, like Gloo's addresses.
  ncclUniqueId id;
  const std::string key = options.prefix + "/nccl-unique-id";
  if (options.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat("nccl: unique id: ", ncclGetErrorString(r)));
    }
    LOOM_RETURN_IF_ERROR(store->Set(key, absl::BytesToHexString(std::string(id.internal, sizeof(id.internal)))));
  } else {
    absl::StatusOr<std::string> hex = store->Get(key, options.timeout);
    if (!hex.ok()) return hex.status();
    const std::string bytes = absl::HexStringToBytes(*hex);
    if (bytes.size() != sizeof(id.internal)) {
      return absl::DataLossError(absl::StrCat("nccl: the unique id under ", key, " has ", bytes.size(), " bytes"));
    }
    std::copy(bytes.begin(), bytes.end(), id.internal);
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so that a missing peer times out here instead of blocking forever
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.size, id, options.rank, &config);
  const absl::Time deadline = MonotonicNow() + options.timeout;
  while (r == ncclInProgress) {
    if (MonotonicNow() > deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(absl::StrCat("nccl: rank ", options.rank, " of ", options.size,
                                                      " could not join group '", options.prefix, "' within ",
                                                      absl::FormatDuration(options.timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    if (comm != nullptr) ncclCommAbort(comm);
    return absl::UnavailableError(absl::StrCat("nccl: rank ", options.rank, " of ", options.size, " could not join group '",
                                               options.prefix, "': ", ncclGetErrorString(r)));
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess) {
    ncclCommAbort(comm);
    return CudaError(e, "stream");
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, stream, options.rank, options.size, options.device,
                                                            options.timeout, absl::StrCat("nccl group ", options.prefix)));
}

}  // namespace loom::engine
