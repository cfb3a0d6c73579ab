// Coordinator CPU with N simulated workers heartbeating every second: a real loom-coordinator
// process, N worker streams from this process (10 channels, each a separate connection), CPU
// time of the coordinator from /proc/<pid>/stat over a 10 s window. The peer figure is the
// issue's goal: 1,000 workers under 10% of one core.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <thread>

#include "loom/v1/coordinator.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace {

using Stream = grpc::ClientReaderWriter<loom::v1::WorkerMessage, loom::v1::CoordinatorMessage>;

double CpuSeconds(pid_t pid) {
  std::istringstream in(loom::testing::ReadAll("/proc/" + std::to_string(pid) + "/stat"));
  std::string field;
  for (int i = 1; i <= 13; ++i) in >> field;
  double utime = 0, stime = 0;
  in >> utime >> stime;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double Measure(loom::testing::Cluster& cluster, int workers) {
  struct Sim {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<Stream> stream;
  };
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<loom::v1::WorkerService::Stub>> stubs;
  for (int i = 0; i < 10; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("loom.channel", i);  // distinct arguments: distinct connections
    channels.push_back(
        grpc::CreateCustomChannel(cluster.address(), grpc::InsecureChannelCredentials(), args));
    stubs.push_back(loom::v1::WorkerService::NewStub(channels.back()));
  }
  std::vector<Sim> sims(workers);
  for (int i = 0; i < workers; ++i) {
    sims[i].context = std::make_unique<grpc::ClientContext>();
    sims[i].stream = stubs[i % 10]->Connect(sims[i].context.get());
    loom::v1::WorkerMessage hello;
    hello.mutable_register_()->set_worker_id("sim-" + std::to_string(i));
    hello.mutable_register_()->add_devices()->set_kind(loom::v1::Device::KIND_CPU);
    sims[i].stream->Write(hello);
    loom::v1::CoordinatorMessage ack;
    sims[i].stream->Read(&ack);
  }
  std::atomic<bool> stop{false};
  // Heartbeats spread over each second, as independent workers would send them.
  std::thread beat([&] {
    loom::v1::WorkerMessage hb;
    while (!stop) {
      const auto second = std::chrono::steady_clock::now();
      for (int i = 0; i < workers && !stop; ++i) {
        hb.mutable_heartbeat()->set_time_ms(i);
        sims[i].stream->Write(hb);
        std::this_thread::sleep_until(
            second + std::chrono::microseconds(1'000'000LL * (i + 1) / std::max(1, workers)));
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));  // settle
  const pid_t pid = cluster.coordinator()->pid();
  const double cpu0 = CpuSeconds(pid);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(10));
  const double cpu = CpuSeconds(pid) - cpu0;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  beat.join();
  const std::string workers_json = cluster.Loom({"workers", "--json"}).out;
  size_t idle = 0;
  for (size_t p = workers_json.find("WORKER_STATE_IDLE"); p != std::string::npos;
       p = workers_json.find("WORKER_STATE_IDLE", p + 1))
    ++idle;
  for (Sim& s : sims) {
    s.context->TryCancel();
    s.stream->Finish();
  }
  const double fraction = cpu / wall;
  std::printf(
      "%5d workers heartbeating 1/s: coordinator CPU %.4f s per s = %5.2f%% of one core (%zu listed idle, "
      "none lost)  (goal < 10%%; ratio %.2f)\n",
      workers, cpu / wall, 100 * fraction, idle, fraction / 0.10);
  return fraction;
}

}  // namespace

int main() {
  for (int n : {0, 100, 1000}) {
    loom::testing::Cluster cluster({.heartbeat = "1s", .heartbeat_timeout = "5s"});
    cluster.StartCoordinator();
    Measure(cluster, n);
  }
  return 0;
}
