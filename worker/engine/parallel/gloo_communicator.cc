// Gloo backend of Communicator: TCP transport, full-mesh rendezvous through Loom's KeyValueStore.
// Gloo reports failures by throwing; this file is the boundary where they become absl::Status.
#include <atomic>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include "absl/strings/str_cat.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/parallel/shared_memory_reduce.h"

namespace loom::engine {
namespace {

// Gloo's Store interface over Loom's (Gloo expects exceptions on failure).
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(KeyValueStore* store, absl::Duration timeout) : store_(store), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    if (absl::Status s = store_->Set(key, std::string(data.begin(), data.end())); !s.ok())
      throw std::runtime_error(std::string(s.message()));
  }
  std::vector<char> get(const std::string& key) override {
    absl::StatusOr<std::string> value = store_->Get(key, timeout_);
    if (!value.ok()) throw std::runtime_error(std::string(value.status().message()));
    return std::vector<char>(value->begin(), value->end());
  }
  void wait(const std::vector<std::string>& keys) override {
    wait(keys, absl::ToChronoMilliseconds(timeout_));
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    for (const std::string& key : keys) {
      absl::StatusOr<std::string> value = store_->Get(key, absl::FromChrono(timeout));
      if (!value.ok()) throw std::runtime_error(std::string(value.status().message()));
    }
  }

 private:
  KeyValueStore* store_;
  absl::Duration timeout_;
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> context, std::string name)
      : context_(std::move(context)), name_(std::move(name)) {}

  int rank() const override { return context_->rank; }
  int size() const override { return context_->size; }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (!shm_) return AllReduce(data, count);
    if (aborted_) return absl::AbortedError(absl::StrCat(name_, ": all-reduce after abort"));
    if (broken_) return absl::UnavailableError(absl::StrCat(name_, ": all-reduce on a broken group"));
    absl::Status s = shm_->Sum(data, count, aborted_);
    if (!s.ok()) {
      broken_ = true;
      return absl::Status(s.code(), absl::StrCat(name_, ": all-reduce failed (rank ", rank(), " of ", size(),
                                                 "): ", s.message()));
    }
    return s;
  }
  void UseSharedMemory(std::unique_ptr<SharedMemoryReduce> shm) { shm_ = std::move(shm); }
  bool uses_shared_memory() const { return shm_ != nullptr; }
  std::string transport() const override {
    // Shared memory needs every rank of the group on this host (shared_memory_reduce.h).
    return shm_ != nullptr ? "all-reduce over shared memory, the rest over tcp" : "tcp";
  }
  absl::Status AllReduceSum(double* data, int64_t count) override { return AllReduce(data, count); }

  absl::Status Broadcast(float* data, int64_t count, int root) override {
    return Run("broadcast", [&] {
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(data, static_cast<size_t>(count));
      opts.setRoot(root);
      opts.setTag(NextTag());
      gloo::broadcast(opts);
    });
  }

  absl::Status AllGather(const float* in, int64_t count, float* out) override {
    return Run("all-gather", [&] {
      std::memcpy(out + int64_t{rank()} * count, in, count * sizeof(float));
      gloo::AllgatherOptions opts(context_);
      opts.setOutput(out, static_cast<size_t>(count * size()));
      opts.setTag(NextTag());
      gloo::allgather(opts);
    });
  }

  absl::Status ReduceScatterSum(const float* in, int64_t count, float* out) override {
    const int n = size(), r = rank();
    if (n == 1) {
      if (out != in) std::memmove(out, in, count * sizeof(float));
      return Run("reduce-scatter", [] {});
    }
    // A ring: in step s, send the partial sum of chunk (r - s - 1) to the next rank and add the
    // previous rank's partial sum of chunk (r - s - 2) into ours; after n - 1 steps chunk r is
    // complete here. Slots come from the context, in the same order on every rank.
    work_.assign(in, in + int64_t{n} * count);
    incoming_.resize(count);
    const size_t bytes = count * sizeof(float);
    return Run("reduce-scatter", [&] {
      auto send_buffer = context_->createUnboundBuffer(work_.data(), work_.size() * sizeof(float));
      auto recv_buffer = context_->createUnboundBuffer(incoming_.data(), bytes);
      const int next = (r + 1) % n, previous = (r + n - 1) % n;
      for (int step = 0; step < n - 1; ++step) {
        const uint64_t slot = context_->nextSlot();
        const int send_chunk = ((r - step - 1) % n + n) % n, recv_chunk = ((r - step - 2) % n + n) % n;
        recv_buffer->recv(previous, slot, 0, bytes);
        send_buffer->send(next, slot, send_chunk * bytes, bytes);
        Wait(recv_buffer->waitRecv(Timeout()), "receive");
        Wait(send_buffer->waitSend(Timeout()), "send");
        float* acc = work_.data() + int64_t{recv_chunk} * count;
        for (int64_t i = 0; i < count; ++i) acc[i] += incoming_[i];
      }
      std::memcpy(out, work_.data() + int64_t{r} * count, bytes);
    });
  }

  absl::Status Send(const float* data, int64_t count, int peer, uint32_t tag) override {
    if (absl::Status s = CheckPeer("send", peer); !s.ok()) return s;
    return Run("send", [&] {
      auto buffer = context_->createUnboundBuffer(const_cast<float*>(data), count * sizeof(float));
      buffer->send(peer, PointToPointSlot(tag));
      Wait(buffer->waitSend(Timeout()), "send");
    });
  }

  absl::Status Recv(float* data, int64_t count, int peer, uint32_t tag) override {
    if (absl::Status s = CheckPeer("recv", peer); !s.ok()) return s;
    return Run("recv", [&] {
      auto buffer = context_->createUnboundBuffer(data, count * sizeof(float));
      buffer->recv(peer, PointToPointSlot(tag));
      Wait(buffer->waitRecv(Timeout()), "receive");
    });
  }

  absl::Status SendRecv(const float* send, int64_t send_count, int send_peer, uint32_t send_tag, float* recv,
                        int64_t recv_count, int recv_peer, uint32_t recv_tag) override {
    if (absl::Status s = CheckPeer("send", send_peer); !s.ok()) return s;
    if (absl::Status s = CheckPeer("recv", recv_peer); !s.ok()) return s;
    return Run("send-recv", [&] {
      auto out = context_->createUnboundBuffer(const_cast<float*>(send), send_count * sizeof(float));
      auto in = context_->createUnboundBuffer(recv, recv_count * sizeof(float));
      in->recv(recv_peer, PointToPointSlot(recv_tag));
      out->send(send_peer, PointToPointSlot(send_tag));
      Wait(in->waitRecv(Timeout()), "receive");
      Wait(out->waitSend(Timeout()), "send");
    });
  }

  absl::Status Barrier() override {
    return Run("barrier", [&] {
      gloo::BarrierOptions opts(context_);
      opts.setTag(NextTag());
      gloo::barrier(opts);
    });
  }

  void Abort() override { aborted_ = true; }

 private:
  template <typename T>
  absl::Status AllReduce(T* data, int64_t count) {
    return Run("all-reduce", [&] {
      gloo::AllreduceOptions opts(context_);
      opts.setOutput(data, static_cast<size_t>(count));
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
      opts.setTag(NextTag());
      gloo::allreduce(opts);
    });
  }

  uint32_t NextTag() { return tag_++; }

  std::chrono::milliseconds Timeout() const { return context_->getTimeout(); }
  // Point-to-point slots live apart from the context's collective slots (which count up from 0).
  static uint64_t PointToPointSlot(uint32_t tag) { return (uint64_t{1} << 48) | tag; }
  // Gloo's wait calls return false when aborted; a timeout throws (both end the group).
  static void Wait(bool done, const char* what) {
    if (!done) throw std::runtime_error(absl::StrCat(what, " was aborted"));
  }
  absl::Status CheckPeer(const char* what, int peer) const {
    if (peer < 0 || peer >= size() || peer == rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, ": ", what, " with rank ", peer, " from rank ", rank(), " of ", size()));
    }
    return absl::OkStatus();
  }

  template <typename Fn>
  absl::Status Run(const char* what, Fn&& fn) {
    if (aborted_) return absl::AbortedError(absl::StrCat(name_, ": ", what, " after abort"));
    if (broken_) return absl::UnavailableError(absl::StrCat(name_, ": ", what, " on a broken group"));
    try {
      fn();
      return absl::OkStatus();
    } catch (const std::exception& e) {
      broken_ = true;  // Gloo pairs are unusable after an I/O error or a timeout
      const std::string message = e.what();
      const bool timeout = message.find("imeout") != std::string::npos || message.find("imed out") != std::string::npos;
      const std::string text =
          absl::StrCat(name_, ": ", what, " failed (rank ", rank(), " of ", size(), "): ", message);
      return timeout ? absl::DeadlineExceededError(text) : absl::UnavailableError(text);
    }
  }

  std::shared_ptr<gloo::rendezvous::Context> context_;
  std::string name_;
  uint32_t tag_ = 0;
  std::vector<float> work_, incoming_;  // reduce-scatter's partial sums and the chunk arriving
  std::atomic<bool> aborted_{false};
  bool broken_ = false;
  std::unique_ptr<SharedMemoryReduce> shm_;  // float all-reduces when the group shares this host
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> NewGlooCommunicator(KeyValueStore* store,
                                                                  const GlooOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("gloo: rank ", options.rank, " is not in a group of ", options.size));
  }
  try {
    gloo::transport::tcp::attr attr(options.host.c_str());
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
    context->setTimeout(absl::ToChronoMilliseconds(options.timeout));
    GlooStoreAdapter adapter(store, options.timeout);
    gloo::rendezvous::PrefixStore prefixed(options.prefix, adapter);
    context->connectFullMesh(prefixed, device);
    auto communicator = std::make_unique<GlooCommunicator>(std::move(context), absl::StrCat("group ", options.prefix));
    if (options.shared_memory && options.size > 1) {
      absl::StatusOr<std::unique_ptr<SharedMemoryReduce>> shm =
          SharedMemoryReduce::Join(store, options.prefix, options.rank, options.size, options.timeout);
      if (!shm.ok()) return shm.status();
      communicator->UseSharedMemory(std::move(*shm));
    }
    return std::unique_ptr<Communicator>(std::move(communicator));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo: rank ", options.rank, " of ", options.size,
                                               " could not join group '", options.prefix, "': ", e.what()));
  }
}

}  // namespace loom::engine
