// The worker daemon: one stream to the coordinator (reconnecting with backoff when it goes
// away), heartbeats, and the rank processes it is assigned. Messages that must not be lost
// (checkpoint reports, rank exits) wait for the next connection when the stream is down;
// progress is dropped then (the next step brings fresh progress).
#pragma once

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loom/v1/coordinator.grpc.pb.h"
#include "worker/daemon/rank_logs.h"
#include "worker/daemon/rank_process.h"
#include "worker/daemon/worker_metrics.h"

namespace loom::worker {

struct DaemonOptions {
  std::string coordinator = "127.0.0.1:7070";
  std::string worker_id;
  std::string host;
  int slots = 1;
  int threads_per_rank = 1;
  // Peak FLOP/s of one slot (a rank with threads_per_rank threads), for MFU: measured at start-up
  // (peak_flops.h) or --peak-flops. 0: unknown, no MFU.
  double peak_flops_per_slot = 0;
  std::string work_dir;
  std::string rank_binary;
  std::string metrics_address;
  // The address its ranks bind their collective sockets to and peers dial (--advertise).
  std::string address = "127.0.0.1";
  absl::Duration heartbeat = absl::Seconds(1);
  // Sent when it registers ("loom-worker 0.1.0").
  std::string version = "loom-worker";
  // Mutual TLS to the coordinator (common/tls.h): the credentials of the identity `tls_name` in
  // `tls_dir`, which its ranks use too. Null / empty: no TLS.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string tls_dir;
  std::string tls_name;
  // How long a stopping worker lets its ranks run to their next step boundary before SIGKILL.
  absl::Duration stop_grace = absl::Seconds(30);
};

class WorkerDaemon {
 public:
  WorkerDaemon(DaemonOptions options, WorkerMetrics* metrics);
  ~WorkerDaemon();

  // Connects, serves and reconnects until Stop(); then aborts every rank and waits for them.
  void Run();
  // Thread-safe: tells the coordinator it is leaving, then Run stops the ranks (each at its next
  // step boundary, within stop_grace) and returns.
  void Stop();

 private:
  using Stream = grpc::ClientReaderWriter<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage>;
  static bool StreamEnded(Stream** stream);
  struct Rank {
    loom::v1::Assignment assignment;
    std::unique_ptr<RankProcess> process;
  };

  // One connection's life; returns when the stream breaks. True when it registered.
  bool Session();
  void StartRank(const loom::v1::Assignment& assignment);
  void AbortRank(const loom::v1::RankRef& rank, const std::string& reason);
  // Sends upstream now, or (when `keep`) queues for the next connection.
  void SendUp(const loom::v1::WorkerMessage& message, bool keep);
  void OnRankMessage(const std::string& name, const loom::v1::WorkerMessage& message);
  void OnRankExit(const std::string& name, const loom::v1::RankExit& exit);
  std::vector<loom::v1::RankRef> RunningRanks();
  void ReapFinished();

  const DaemonOptions options_;
  WorkerMetrics* metrics_;
  std::atomic<bool> stop_{false};
  // The coordinator declared this worker lost while it sent heartbeat datagrams: they may not
  // arrive (a firewall on the UDP port), so heartbeats go on the stream from then on (Run's
  // thread only).
  bool datagrams_unheard_ = false;

  absl::Mutex send_mu_;
  Stream* stream_ ABSL_GUARDED_BY(send_mu_) = nullptr;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(send_mu_) = nullptr;
  std::deque<loom::v1::WorkerMessage> pending_ ABSL_GUARDED_BY(send_mu_);

  absl::Mutex ranks_mu_;
  std::map<std::string, Rank> ranks_ ABSL_GUARDED_BY(ranks_mu_);
  std::vector<std::unique_ptr<RankProcess>> finished_ ABSL_GUARDED_BY(ranks_mu_);
  // Its ranks' log files, for `loom logs`.
  RankLogs rank_logs_;
};

}  // namespace loom::worker
