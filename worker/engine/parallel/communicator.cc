#include "worker/engine/parallel/communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace loom::engine {
namespace {

class SingleProcessCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduceSum(float*, int64_t) override { return Check("all-reduce"); }
  absl::Status AllReduceSum(double*, int64_t) override { return Check("all-reduce"); }
  absl::Status Broadcast(float*, int64_t, int root) override {
    if (root != 0)
      return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " in a group of 1"));
    return Check("broadcast");
  }
  absl::Status AllGather(const float* in, int64_t count, float* out) override {
    if (out != in) std::memmove(out, in, count * sizeof(float));
    return Check("all-gather");
  }
  absl::Status ReduceScatterSum(const float* in, int64_t count, float* out) override {
    if (out != in) std::memmove(out, in, count * sizeof(float));
    return Check("reduce-scatter");
  }
  absl::Status Send(const float*, int64_t, int peer, uint32_t) override { return NoPeer("send", peer); }
  absl::Status Recv(float*, int64_t, int peer, uint32_t) override { return NoPeer("recv", peer); }
  absl::Status SendRecv(const float*, int64_t, int send_peer, uint32_t, float*, int64_t, int, uint32_t) override {
    return NoPeer("send", send_peer);
  }
  absl::Status Barrier() override { return Check("barrier"); }
  void Abort() override { aborted_ = true; }

 private:
  absl::Status Check(const char* what) const {
    return aborted_ ? absl::AbortedError(absl::StrCat(what, " after abort")) : absl::OkStatus();
  }
  static absl::Status NoPeer(const char* what, int peer) {
    return absl::InvalidArgumentError(absl::StrCat(what, " to rank ", peer, " in a group of 1"));
  }
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<Communicator> NewSingleProcessCommunicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

}  // namespace loom::engine
