#include "worker/daemon/daemon.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "common/clock.h"
#include "common/files.h"
#include "common/heartbeat_datagram.h"
#include "common/logging.h"
#include "common/tls.h"
#include "worker/daemon/peak_flops.h"
#include "worker/rank_protocol.h"

namespace loom::worker {
namespace {

constexpr char kLog[] = "worker";

}  // namespace

WorkerDaemon::WorkerDaemon(DaemonOptions options, WorkerMetrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

WorkerDaemon::~WorkerDaemon() { Stop(); }

bool WorkerDaemon::StreamEnded(Stream** stream) { return *stream == nullptr; }

void WorkerDaemon::Stop() {
  if (stop_.exchange(true)) return;
  // With ranks running and the coordinator reachable, stop as a drain does: the coordinator places
  // no new ranks here, and each rank saves a checkpoint with its peers at its next step boundary
  // and exits (76), so its job moves losing no step. Within stop_grace; then as below.
  bool has_ranks = false;
  {
    absl::MutexLock lock(&ranks_mu_);
    has_ranks = !ranks_.empty();
  }
  bool draining = false;
  if (has_ranks) {
    absl::MutexLock lock(&send_mu_);
    loom::v1::WorkerMessage m;
    m.mutable_draining()->set_reason("the worker is stopping (SIGTERM)");
    draining = stream_ != nullptr && pending_.empty() && stream_->Write(m);
  }
  if (draining) {
    Log(LogLevel::kInfo, kLog, options_.worker_id, ": stopping: its ranks checkpoint at their next step and stop (up to ",
        absl::FormatDuration(options_.stop_grace), ")");
    absl::MutexLock lock(&ranks_mu_);
    for (auto& [name, rank] : ranks_) rank.process->Signal(SIGUSR1);
    auto none_left = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(ranks_mu_) { return ranks_.empty(); };
    ranks_mu_.AwaitWithTimeout(absl::Condition(&none_left), options_.stop_grace);
  }
  // The ranks first (SIGTERM: they stop at their next step boundary, SIGKILL after the grace), so
  // that none reaches a checkpoint between the coordinator's handling of the Leave, which drops
  // its attempt's write lease, and its own stop.
  {
    absl::MutexLock lock(&ranks_mu_);
    for (auto& [name, rank] : ranks_) rank.process->Abort(options_.stop_grace);
  }
  absl::MutexLock lock(&send_mu_);
  if (stream_ != nullptr) {
    // The coordinator moves this worker's jobs now instead of after the heartbeat timeout. Then
    // half-close and let the coordinator finish the stream, which it does once it has handled the
    // Leave (a cancel could overtake it); cancel only if that takes longer than 2 s.
    loom::v1::WorkerMessage leave;
    leave.mutable_leave()->set_reason("the worker is stopping (SIGTERM)");
    if (stream_->Write(leave) && stream_->WritesDone() &&
        send_mu_.AwaitWithTimeout(absl::Condition(&StreamEnded, &stream_), absl::Seconds(2))) {
      return;
    }
  }
  if (context_ != nullptr) context_->TryCancel();
}

void WorkerDaemon::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stop_) {
    const bool registered = Session();
    if (stop_) break;
    if (registered) backoff = absl::Milliseconds(100);
    Log(LogLevel::kInfo, kLog, options_.worker_id, ": no coordinator at ", options_.coordinator,
        "; retrying in ", absl::FormatDuration(backoff));
    const absl::Time until = MonotonicNow() + backoff;
    while (!stop_ && MonotonicNow() < until) {
      ReapFinished();
      absl::SleepFor(absl::Milliseconds(20));
    }
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
  // Shutting down: abort every rank and wait for it (each within about a second).
  std::map<std::string, Rank> ranks;
  {
    absl::MutexLock lock(&ranks_mu_);
    ranks.swap(ranks_);
  }
  for (auto& [name, rank] : ranks) rank.process->Abort(options_.stop_grace);
  ranks.clear();
  ReapFinished();
}

bool WorkerDaemon::Session() {
  grpc::ChannelArguments args;
  // A coordinator host that died without closing the connection is noticed within 35 s (a
  // restarted coordinator process closes it at once).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnect promptly after a coordinator restart instead of gRPC's default backoff.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  auto channel = grpc::CreateCustomChannel(
      options_.coordinator,
      options_.credentials != nullptr ? options_.credentials : grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(1))) return false;
  auto stub = loom::v1::WorkerService::NewStub(channel);
  // The shared-storage proof: read the token the coordinator keeps under its checkpoint root.
  std::string token;
  {
    grpc::ClientContext storage_context;
    storage_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    loom::v1::StorageInfo storage;
    const grpc::Status got = stub->GetStorage(&storage_context, loom::v1::GetStorageRequest(), &storage);
    if (!got.ok()) {
      Log(LogLevel::kWarning, kLog, options_.worker_id, ": cannot ask ", options_.coordinator,
          " for its storage: ", got.error_message());
      return false;
    }
    absl::StatusOr<std::string> read = ReadFile(storage.token_path());
    if (read.ok()) {
      token = std::string(absl::StripAsciiWhitespace(*read));
    } else {
      Log(LogLevel::kError, kLog, options_.worker_id, ": this host does not see the coordinator's checkpoint root ",
          storage.checkpoint_root(), ": ", read.status().message(),
          " (mount the shared filesystem at the same path on every host)");
    }
  }
  grpc::ClientContext context;
  std::unique_ptr<Stream> stream = stub->Connect(&context);

  loom::v1::WorkerMessage hello;
  loom::v1::RegisterWorker* reg = hello.mutable_register_();
  reg->set_worker_id(options_.worker_id);
  reg->set_host(options_.host);
  for (int i = 0; i < options_.slots; ++i) {
    loom::v1::Device* d = reg->add_devices();
    d->set_kind(loom::v1::Device::KIND_CPU);
    d->set_index(i);
    d->set_name("cpu");
    d->set_threads(options_.threads_per_rank);
  }
  reg->set_metrics_address(options_.metrics_address);
  reg->set_address(options_.address);
  reg->set_storage_token(token);
  for (const loom::v1::RankRef& r : RunningRanks()) *reg->add_running() = r;
  reg->set_version(options_.version);
  loom::v1::CoordinatorMessage first;
  if (!stream->Write(hello) || !stream->Read(&first) || !first.has_registered()) {
    // A refusal ends the stream with its status; cancel only a stream that answered wrongly.
    if (first.body_case() != loom::v1::CoordinatorMessage::BODY_NOT_SET) context.TryCancel();
    grpc::Status status = stream->Finish();
    if (!status.ok()) {
      Log(LogLevel::kWarning, kLog, options_.worker_id, ": registration refused by ", options_.coordinator,
          ": ", status.error_message());
    }
    return false;
  }
  const absl::Duration interval = first.registered().heartbeat_interval_ms() > 0
                                      ? absl::Milliseconds(first.registered().heartbeat_interval_ms())
                                      : options_.heartbeat;
  size_t replayed = 0;
  {
    absl::MutexLock lock(&send_mu_);
    stream_ = stream.get();
    context_ = &context;
    if (stop_) context.TryCancel();
    while (!pending_.empty() && stream_->Write(pending_.front())) {
      pending_.pop_front();
      ++replayed;
    }
  }
  Log(LogLevel::kInfo, kLog, options_.worker_id, ": registered with ", options_.coordinator, " (",
      reg->running_size(), " ranks running, ", replayed, " reports replayed)");

  // Heartbeats as datagrams where the coordinator offers them (common/heartbeat_datagram.h): one
  // every interval, and a full one, listing the ranks, on the stream every full interval. A key of
  // another length is another datagram version (an older coordinator's): the stream only, then.
  std::unique_ptr<HeartbeatSender> datagrams;
  HeartbeatKey key{};
  int64_t full_every = 1;  // intervals between full heartbeats
  const loom::v1::RegisterAck& ack = first.registered();
  if (ack.heartbeat_udp_port() > 0 && ack.heartbeat_key().size() == key.size() && !datagrams_unheard_) {
    const std::string host = options_.coordinator.substr(0, options_.coordinator.rfind(':'));
    absl::StatusOr<std::unique_ptr<HeartbeatSender>> opened = HeartbeatSender::Open(host, ack.heartbeat_udp_port());
    if (opened.ok()) {
      datagrams = std::move(*opened);
      std::memcpy(key.data(), ack.heartbeat_key().data(), key.size());
      full_every = std::max<int64_t>(1, absl::Milliseconds(ack.full_heartbeat_interval_ms()) / interval);
    } else {
      Log(LogLevel::kWarning, kLog, options_.worker_id, ": heartbeats on the stream only: ", opened.status().message());
    }
  }
  absl::Notification done;
  std::thread heartbeats([&] {
    for (int64_t n = 1; !done.WaitForNotificationWithTimeout(interval); ++n) {
      // Datagram n of this connection is numbered n: the coordinator takes each number once.
      if (datagrams != nullptr) datagrams->Send(SignedHeartbeat(ack.connection(), static_cast<uint64_t>(n), key));
      if (datagrams == nullptr || n % full_every == 0) {
        loom::v1::WorkerMessage hb;
        hb.mutable_heartbeat()->set_time_ms(absl::ToUnixMillis(absl::Now()));
        for (const loom::v1::RankRef& r : RunningRanks()) *hb.mutable_heartbeat()->add_running() = r;
        SendUp(hb, false);
      }
      ReapFinished();
    }
  });
  loom::v1::CoordinatorMessage message;
  while (stream->Read(&message)) {
    if (message.has_assign()) {
      StartRank(message.assign());
    } else if (message.has_abort()) {
      AbortRank(message.abort().rank(), message.abort().reason());
    } else if (message.has_read_log()) {
      // `loom logs`: a rank's log, read here (at most 256 KiB) and sent up.
      loom::v1::WorkerMessage m;
      *m.mutable_log_chunk() = rank_logs_.Read(message.read_log());
      SendUp(m, false);
    } else if (message.has_preempt()) {
      // Drained: each rank saves a checkpoint with its peers at its next step boundary and exits.
      absl::MutexLock lock(&ranks_mu_);
      for (auto& [name, rank] : ranks_) {
        Log(LogLevel::kInfo, kLog, name, ": checkpoint and stop (", message.preempt().reason(), ")");
        rank.process->Signal(SIGUSR1);
      }
    }
  }
  {
    absl::MutexLock lock(&send_mu_);
    stream_ = nullptr;
    context_ = nullptr;
  }
  done.Notify();
  heartbeats.join();
  // Read returned false: the call is over, and Finish returns its status (the coordinator's,
  // e.g. UNAVAILABLE "declared this worker lost", or CANCELLED after Stop).
  grpc::Status status = stream->Finish();
  Log(LogLevel::kWarning, kLog, options_.worker_id, ": stream to ", options_.coordinator,
      " ended: ", status.ok() ? std::string("closed") : status.error_message());
  if (datagrams != nullptr && status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      absl::StrContains(status.error_message(), "declared this worker lost")) {
    datagrams_unheard_ = true;
    Log(LogLevel::kWarning, kLog, options_.worker_id, ": declared lost while sending heartbeat datagrams to UDP ",
        options_.coordinator.substr(0, options_.coordinator.rfind(':')), ":", ack.heartbeat_udp_port(),
        ": this host stalled, or those datagrams do not arrive (is the UDP port open?); heartbeats go on the "
        "stream from now on");
  }
  return true;
}

void WorkerDaemon::SendUp(const loom::v1::WorkerMessage& message, bool keep) {
  absl::MutexLock lock(&send_mu_);
  if (stream_ != nullptr && pending_.empty() && stream_->Write(message)) return;
  if (keep) pending_.push_back(message);
}

void WorkerDaemon::StartRank(const loom::v1::Assignment& assignment) {
  const std::string name = RankName(assignment.rank());
  absl::MutexLock lock(&ranks_mu_);
  if (ranks_.contains(name)) return;  // a duplicate assignment
  const std::string dir = absl::StrCat(options_.work_dir, "/", assignment.rank().job_id(), "#",
                                       assignment.rank().attempt(), "/rank", assignment.rank().rank());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  RankProcessOptions o;
  o.binary = options_.rank_binary;
  o.assignment_path = dir + "/assignment.pb";
  o.log_path = dir + "/rank.log";
  rank_logs_.Remember(name, o.log_path);
  o.rank = assignment.rank();
  const std::string threads = absl::StrCat(options_.threads_per_rank);
  o.env = {"LOOM_THREADS=" + threads, "OMP_NUM_THREADS=" + threads, "OPENBLAS_NUM_THREADS=" + threads,
           "LOOM_COORDINATOR=" + options_.coordinator, "LOOM_WORKER_ID=" + options_.worker_id,
           "LOOM_ADVERTISE=" + options_.address,
           // Its ranks dial the rendezvous with the worker's own certificate (or without TLS, as it does).
           std::string(kTlsDirEnv) + "=" + options_.tls_dir, std::string(kTlsNameEnv) + "=" + options_.tls_name};
  absl::Status written = ec ? absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()))
                            : WriteAssignment(o.assignment_path, assignment);
  absl::StatusOr<std::unique_ptr<RankProcess>> process = absl::UnknownError("not started");
  if (!written.ok()) {
    process = written;
  } else {
    process = RankProcess::Start(
        o, [this, name](const loom::v1::WorkerMessage& m) { OnRankMessage(name, m); },
        [this, name](const loom::v1::RankExit& exit) { OnRankExit(name, exit); });
  }
  if (!process.ok()) {
    Log(LogLevel::kError, kLog, name, ": cannot start: ", process.status().message());
    loom::v1::WorkerMessage m;
    *m.mutable_rank_exit()->mutable_rank() = assignment.rank();
    m.mutable_rank_exit()->set_exit_code(127);
    m.mutable_rank_exit()->set_error(std::string(process.status().message()));
    SendUp(m, true);
    return;
  }
  Log(LogLevel::kInfo, kLog, name, ": started (pid ", (*process)->pid(), ", slot ", assignment.device_index(),
      assignment.resume_from().empty() ? "" : ", resuming from ", assignment.resume_from(), ")");
  ranks_[name] = Rank{assignment, std::move(*process)};
  metrics_->SetRunning(static_cast<int>(ranks_.size()));
}

void WorkerDaemon::AbortRank(const loom::v1::RankRef& rank, const std::string& reason) {
  const std::string name = RankName(rank);
  absl::MutexLock lock(&ranks_mu_);
  auto it = ranks_.find(name);
  if (it == ranks_.end()) return;
  Log(LogLevel::kInfo, kLog, name, ": abort (", reason, ")");
  it->second.process->Abort();
}

void WorkerDaemon::OnRankMessage(const std::string& name, const loom::v1::WorkerMessage& message) {
  loom::v1::WorkerMessage m = message;
  std::string plan_id, stage;
  loom::v1::RankRef rank;
  int world_size = 1;
  {
    absl::MutexLock lock(&ranks_mu_);
    auto it = ranks_.find(name);
    if (it == ranks_.end()) return;
    rank = it->second.assignment.rank();
    plan_id = it->second.assignment.plan_id();
    stage = it->second.assignment.stage().name();
    world_size = std::max(1, it->second.assignment.layout().world_size());
  }
  if (m.has_progress()) {
    loom::v1::Progress& p = *m.mutable_progress();
    *p.mutable_rank() = rank;
    // MFU is job-global: rank 0's report carries it (to `loom status` and the job's gauge).
    p.clear_model_flops_utilization();
    if (rank.rank() == 0) {
      p.set_model_flops_utilization(ModelFlopsUtilization(p.tokens_per_second(), p.model_flops_per_token(),
                                                          world_size, options_.peak_flops_per_slot));
    }
    metrics_->OnProgress(plan_id, stage, m.progress());
    SendUp(m, false);
  } else if (m.has_checkpoint()) {
    *m.mutable_checkpoint()->mutable_rank() = rank;
    metrics_->OnCheckpoint(plan_id, stage, m.checkpoint());
    SendUp(m, true);
  }
}

void WorkerDaemon::OnRankExit(const std::string& name, const loom::v1::RankExit& exit) {
  Log(exit.exit_code() == 0 ? LogLevel::kInfo : LogLevel::kWarning, kLog, name, ": exited with ",
      exit.exit_code(), exit.error().empty() ? "" : ": ", exit.error());
  metrics_->OnRankExit(exit);
  loom::v1::WorkerMessage m;
  *m.mutable_rank_exit() = exit;
  SendUp(m, true);
  absl::MutexLock lock(&ranks_mu_);
  auto it = ranks_.find(name);
  if (it == ranks_.end()) return;
  finished_.push_back(std::move(it->second.process));
  ranks_.erase(it);
  metrics_->SetRunning(static_cast<int>(ranks_.size()));
}

std::vector<loom::v1::RankRef> WorkerDaemon::RunningRanks() {
  absl::MutexLock lock(&ranks_mu_);
  std::vector<loom::v1::RankRef> out;
  for (const auto& [name, rank] : ranks_) {
    if (!rank.process->exited()) out.push_back(rank.assignment.rank());
  }
  return out;
}

void WorkerDaemon::ReapFinished() {
  std::vector<std::unique_ptr<RankProcess>> done;
  {
    absl::MutexLock lock(&ranks_mu_);
    done.swap(finished_);
  }
  done.clear();  // joins their threads outside the lock
}

}  // namespace loom::worker
