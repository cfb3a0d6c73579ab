// Simulated worker daemons for the control-plane benchmarks, and a real loom-coordinator process
// for them to talk to.
//
// A simulated worker speaks loom-worker's protocol (worker/daemon/daemon.cc) without running
// ranks: GetStorage (once for the whole simulation: every worker would read the same file), then
// a WorkerService.Connect stream whose first message registers it (its devices, a unique
// `address`, and `storage_token` = the contents of StorageInfo.token_path), a heartbeat every
// second, and the Assignment and Abort messages the coordinator sends down, which it records.
// Its channel has the daemon's keepalive settings.
//
// Connections: `connections` TCP connections carry the workers' streams (worker i uses connection
// i % connections). In a real cluster every worker daemon is its own host and so its own
// connection, so the benchmarks default to one connection per worker; fewer connections
// (several streams multiplexed on one HTTP/2 connection) are cheaper for the coordinator and are
// what the first heartbeat benchmark used (10).
//
// The streams use gRPC's callback API: 10,000 workers cost this process a few threads, not
// 10,000.
#pragma once

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/heartbeat_datagram.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace loom::bench {

using Clock = std::chrono::steady_clock;

inline int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// CPU time of a process so far, from /proc/<pid>/stat: user, system, in seconds.
struct CpuTimes {
  double user = 0, system = 0;
  double total() const { return user + system; }
  CpuTimes operator-(const CpuTimes& o) const { return {user - o.user, system - o.system}; }
};
inline CpuTimes ProcessCpu(pid_t pid) {
  std::istringstream in(loom::testing::ReadAll("/proc/" + std::to_string(pid) + "/stat"));
  std::string field;
  // Field 2 (the command) is in parentheses and has no spaces here (loom-coordinator).
  for (int i = 1; i <= 13; ++i) in >> field;
  double utime = 0, stime = 0;
  in >> utime >> stime;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  return {utime / tick, stime / tick};
}
inline double CpuSeconds(pid_t pid) { return ProcessCpu(pid).total(); }

// Raises this process's open-file limit to at least `needed` (up to the hard limit); child
// processes (the coordinator) inherit it. False, with a message, when the hard limit is lower.
inline bool RaiseFileLimit(rlim_t needed) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur >= needed) return true;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    std::fprintf(stderr,
                 "the open-file limit is %llu (hard); %llu are needed for one connection per simulated "
                 "worker: raise it (ulimit -Hn, or LimitNOFILE= in systemd) or pass fewer --connections\n",
                 static_cast<unsigned long long>(limit.rlim_max), static_cast<unsigned long long>(needed));
    return false;
  }
  limit.rlim_cur = needed;
  return setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

// A real loom-coordinator on a free port of 127.0.0.1 with a fresh data directory; killed (and
// its directory removed) on destruction.
class CoordinatorProcess {
 public:
  // `extra`: more flags, e.g. {"--tls-dir", DIR} (bench/tls).
  explicit CoordinatorProcess(const std::string& binary, const std::vector<std::string>& extra = {}) {
    std::string dir = (std::filesystem::temp_directory_path() / "loom-bench-XXXXXX").string();
    dir_ = mkdtemp(dir.data());
    address_ = "127.0.0.1:" + std::to_string(loom::testing::FreePort());
    std::vector<std::string> argv = {binary, "--listen", address_, "--data-dir", dir_ + "/coordinator",
                                     "--metrics-listen", "127.0.0.1:0", "--heartbeat", "1s",
                                     "--heartbeat-timeout", "5s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_ = std::make_unique<loom::testing::Process>(argv, dir_ + "/coordinator.log");
    ok_ = !process_->WaitForLog(R"(metrics on http://([0-9.:]+)/metrics)").empty();
    if (!ok_) std::fprintf(stderr, "%s did not start:\n%s\n", binary.c_str(), process_->log().c_str());
  }
  ~CoordinatorProcess() {
    process_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  const std::string& address() const { return address_; }
  pid_t pid() const { return process_->pid(); }
  std::string log() const { return process_->log(); }

 private:
  std::string dir_, address_;
  std::unique_ptr<loom::testing::Process> process_;
  bool ok_ = false;
};

struct AssignmentSeen {
  int worker = 0;  // index of the simulated worker
  loom::v1::Assignment assignment;
  Clock::time_point at;
};

class SimCluster;

class SimWorker final
    : public grpc::ClientBidiReactor<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage> {
 public:
  SimWorker(SimCluster* owner, int index, loom::v1::WorkerMessage hello)
      : owner_(owner), index_(index), out_(std::move(hello)) {}

  void Start(loom::v1::WorkerService::Stub* stub) {
    stub->async()->Connect(&context_, this);
    writing_ = true;
    StartWrite(&out_);
    StartRead(&in_);
    AddHold();  // released when the stream ends (see Close): no write starts after OnDone
    StartCall();
  }

  // Sends one heartbeat; false when the previous message is still being written (skipped) or the
  // stream has ended.
  bool Beat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closing_ || !registered_) return false;
      // With datagrams (as loom-worker does): a datagram, and every full_every_-th beat a full
      // heartbeat on the stream.
      if (datagrams_ && ++beats_sent_ % full_every_ != 0) return SendDatagram();
      if (writing_) return false;
      writing_ = true;
      AddHold();  // the stream cannot end between here and StartWrite
    }
    // Not under mu_: gRPC may run OnWriteDone on this thread before StartWrite returns.
    out_.Clear();
    out_.mutable_heartbeat()->set_time_ms(WallMs());
    StartWrite(&out_);
    RemoveHold();
    return true;
  }

  void Cancel() { context_.TryCancel(); }

  void OnWriteDone(bool) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
  }
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  bool SendDatagram();

  SimCluster* const owner_;
  const int index_;
  bool datagrams_ = false;  // the coordinator offered heartbeat datagrams
  int64_t connection_ = 0;  // and its key, for the datagrams' MACs
  loom::HeartbeatKey key_{};
  uint64_t datagram_sequence_ = 0;
  int64_t full_every_ = 1, beats_sent_ = 0;
  grpc::ClientContext context_;
  loom::v1::WorkerMessage out_;
  loom::v1::CoordinatorMessage in_;
  std::mutex mu_;
  bool writing_ = false;
  bool registered_ = false;
  bool closing_ = false;
};

struct SimOptions {
  std::string coordinator;  // host:port
  int workers = 0;
  int slots_per_worker = 1;
  int connections = 0;  // 0: one per worker
  // The credentials of connection `c` (with one connection per worker, worker c's: a TLS
  // coordinator lets worker sim-c register only with a certificate named sim-c). Null: plain text.
  std::function<std::shared_ptr<grpc::ChannelCredentials>(int c)> credentials;
  // Heartbeat with datagrams when the coordinator offers them (as loom-worker does); false: every
  // heartbeat on the stream.
  bool datagrams = true;
};

class SimCluster {
 public:
  explicit SimCluster(SimOptions options) : options_(std::move(options)) {
    if (options_.connections <= 0 || options_.connections > options_.workers)
      options_.connections = std::max(1, options_.workers);
  }
  ~SimCluster() {
    StopHeartbeats();
    for (auto& w : workers_) w->Cancel();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait_for(lock, std::chrono::seconds(30), [&] { return ended_ == started_; });
  }

  int connections() const { return options_.connections; }

  // Reads the storage token (GetStorage once), opens the connections and registers every worker,
  // `batch` at a time; an error message, or "" once all are registered.
  std::string Connect(int batch = 500) {
    workers_.reserve(static_cast<size_t>(options_.workers));  // the heartbeat thread reads it meanwhile
    for (int c = 0; c < options_.connections; ++c) {
      grpc::ChannelArguments args;
      // The daemon's settings (worker/daemon/daemon.cc).
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      args.SetInt("loom.bench.connection", c);  // distinct arguments: a distinct connection each
      channels_.push_back(grpc::CreateCustomChannel(
          options_.coordinator,
          options_.credentials ? options_.credentials(c) : grpc::InsecureChannelCredentials(), args));
      stubs_.push_back(loom::v1::WorkerService::NewStub(channels_.back()));
    }
    std::string token;
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      loom::v1::StorageInfo storage;
      const grpc::Status s = stubs_[0]->GetStorage(&context, loom::v1::GetStorageRequest(), &storage);
      if (s.ok()) {
        token = loom::testing::ReadAll(storage.token_path());
        storage_token_ = true;
      } else if (s.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
        return "GetStorage: " + s.error_message();
      }
      // UNIMPLEMENTED: a coordinator from before the storage check; it ignores the token.
    }
    for (int first = 0; first < options_.workers; first += batch) {
      const int last = std::min(options_.workers, first + batch);
      for (int i = first; i < last; ++i) {
        loom::v1::WorkerMessage hello;
        loom::v1::RegisterWorker* reg = hello.mutable_register_();
        reg->set_worker_id("sim-" + std::to_string(i));
        reg->set_host("sim-" + std::to_string(i));
        // A unique address per worker, as distinct hosts have (loopback: nothing dials it).
        reg->set_address("127." + std::to_string(1 + i / 62500) + "." + std::to_string(i / 250 % 250) + "." +
                         std::to_string(i % 250 + 1));
        for (int d = 0; d < options_.slots_per_worker; ++d) {
          loom::v1::Device* device = reg->add_devices();
          device->set_kind(loom::v1::Device::KIND_CPU);
          device->set_index(d);
          device->set_name("cpu");
          device->set_threads(1);
        }
        reg->set_metrics_address(reg->address() + ":7072");
        reg->set_version("loom-bench-sim");
        reg->set_storage_token(token);
        workers_.push_back(std::make_unique<SimWorker>(this, i, std::move(hello)));
        ready_ = static_cast<int>(workers_.size());
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++started_;
        }
        workers_.back()->Start(stubs_[static_cast<size_t>(i % options_.connections)].get());
      }
      std::unique_lock<std::mutex> lock(mu_);
      if (!done_cv_.wait_for(lock, std::chrono::seconds(60), [&] { return registered_ + ended_ >= last; })) {
        return "timed out registering workers " + std::to_string(first) + ".." + std::to_string(last - 1) +
               " (" + std::to_string(registered_) + " registered)";
      }
      if (ended_ > 0) return "a worker stream ended while registering: " + first_error_;
    }
    return "";
  }

  // Heartbeats once a second per worker, spread evenly over each second as independent workers
  // would send them. May start before Connect.
  void StartHeartbeats() {
    stop_ = false;
    beater_ = std::thread([this] {
      while (!stop_) {
        const int n = ready_;  // workers registering meanwhile join the next second
        const auto second = Clock::now();
        for (int i = 0; i < n && !stop_; ++i) {
          std::this_thread::sleep_until(second + std::chrono::microseconds(1'000'000LL * i / std::max(1, n)));
          if (workers_[static_cast<size_t>(i)]->Beat()) {
            ++beats_;
          } else {
            ++skipped_;
          }
        }
        std::this_thread::sleep_until(second + std::chrono::seconds(1));
      }
    });
  }
  void StopHeartbeats() {
    stop_ = true;
    if (beater_.joinable()) beater_.join();
  }

  // Waits until `count` assignments arrived in all (or `timeout` passed); returns them.
  std::vector<AssignmentSeen> WaitForAssignments(size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait_for(lock, timeout, [&] { return assignments_.size() >= count; });
    return assignments_;
  }

  bool storage_token_sent() const { return storage_token_; }
  // Whether the workers heartbeat with datagrams (the coordinator offered them).
  bool datagrams() {
    std::lock_guard<std::mutex> lock(mu_);
    return sender_ != nullptr;
  }
  int64_t beats() const { return beats_; }
  int64_t skipped() const { return skipped_; }
  int ended() {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  std::string first_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  friend class SimWorker;

  void Registered() {
    std::lock_guard<std::mutex> lock(mu_);
    ++registered_;
    done_cv_.notify_all();
  }
  void Assigned(int worker, const loom::v1::Assignment& a) {
    const auto now = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    assignments_.push_back({worker, a, now});
    done_cv_.notify_all();
  }
  void Ended(int worker, const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    ++ended_;
    if (first_error_.empty() && status.error_code() != grpc::StatusCode::CANCELLED) {
      first_error_ = "sim-" + std::to_string(worker) + ": " + std::to_string(status.error_code()) + " " +
                     status.error_message();
    }
    done_cv_.notify_all();
  }

  // One UDP socket sends every simulated worker's datagrams: the coordinator reads the same
  // datagrams as from one socket per worker.
  bool OpenDatagrams(int port) {
    if (!options_.datagrams) return false;
    std::lock_guard<std::mutex> lock(mu_);
    if (sender_ == nullptr) {
      absl::StatusOr<std::unique_ptr<loom::HeartbeatSender>> s =
          loom::HeartbeatSender::Open(options_.coordinator.substr(0, options_.coordinator.rfind(':')), port);
      if (s.ok()) sender_ = std::move(*s);
    }
    return sender_ != nullptr;
  }
  bool SendDatagram(const loom::HeartbeatDatagram& beat) {
    return sender_ != nullptr && sender_->Send(beat);  // only the beater thread sends
  }

  SimOptions options_;
  std::unique_ptr<loom::HeartbeatSender> sender_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<loom::v1::WorkerService::Stub>> stubs_;
  std::vector<std::unique_ptr<SimWorker>> workers_;
  std::thread beater_;
  std::atomic<bool> stop_{false};
  std::atomic<int> ready_{0};
  std::atomic<int64_t> beats_{0}, skipped_{0};
  bool storage_token_ = false;

  std::mutex mu_;
  std::condition_variable done_cv_;
  int started_ = 0, registered_ = 0, ended_ = 0;
  std::string first_error_;
  std::vector<AssignmentSeen> assignments_;
};

inline void SimWorker::OnReadDone(bool ok) {
  if (!ok) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    RemoveHold();
    return;
  }
  if (in_.has_registered()) {
    const loom::v1::RegisterAck& ack = in_.registered();
    const bool datagrams = ack.heartbeat_udp_port() > 0 && ack.heartbeat_key().size() == key_.size() &&
                           owner_->OpenDatagrams(ack.heartbeat_udp_port());
    {
      std::lock_guard<std::mutex> lock(mu_);
      registered_ = true;
      if (datagrams) {
        datagrams_ = true;
        connection_ = ack.connection();
        std::memcpy(key_.data(), ack.heartbeat_key().data(), key_.size());
        full_every_ = std::max<int64_t>(1, ack.full_heartbeat_interval_ms() / 1000);
      }
    }
    owner_->Registered();
  } else if (in_.has_assign()) {
    owner_->Assigned(index_, in_.assign());
  }
  StartRead(&in_);
}

inline void SimWorker::OnDone(const grpc::Status& status) { owner_->Ended(index_, status); }

// Under mu_ (Beat): numbered and signed as loom-worker does, one HMAC per datagram.
inline bool SimWorker::SendDatagram() {
  return owner_->SendDatagram(loom::SignedHeartbeat(connection_, ++datagram_sequence_, key_));
}

}  // namespace loom::bench
