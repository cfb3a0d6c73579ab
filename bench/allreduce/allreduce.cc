// bench/allreduce: the Gloo backend's all-reduce on loopback against a plain memcpy of the same
// bytes, and the data-parallel scaling of the demo model on this machine.
//
//   bench_allreduce                 runs everything (it starts its own ranks as child processes)
//
// Part 1: two ranks all-reduce 1 KiB .. 256 MiB of floats; bus bandwidth = 2 (n-1)/n x bytes /
// time (the NCCL-tests convention), printed beside memcpy bandwidth and their ratio.
// Part 2: the demo model's training step at dp=1 with 2 threads and at dp=2 with 1 thread per
// rank (same total cores, same global batch): efficiency = tokens/s(dp=2) / tokens/s(dp=1), and
// the time ranks spend inside the gradient all-reduce.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/command_line.h"
#include "common/plan_io.h"
#include "common/plan_resolve.h"
#include "kernels/cpu/parallel.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/training/trainer.h"

extern char** environ;

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A Communicator that times the collectives it forwards.
class TimedCommunicator : public loom::engine::Communicator {
 public:
  explicit TimedCommunicator(loom::engine::Communicator* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  absl::Status AllReduceSum(float* d, int64_t n) override {
    return Time([&] { return inner_->AllReduceSum(d, n); });
  }
  absl::Status AllReduceSum(double* d, int64_t n) override {
    return Time([&] { return inner_->AllReduceSum(d, n); });
  }
  absl::Status Broadcast(float* d, int64_t n, int root) override { return inner_->Broadcast(d, n, root); }
  absl::Status AllGather(const float* in, int64_t n, float* out) override {
    return inner_->AllGather(in, n, out);
  }
  absl::Status ReduceScatterSum(const float* in, int64_t n, float* out) override {
    return Time([&] { return inner_->ReduceScatterSum(in, n, out); });
  }
  absl::Status Send(const float* d, int64_t n, int peer, uint32_t tag) override { return inner_->Send(d, n, peer, tag); }
  absl::Status Recv(float* d, int64_t n, int peer, uint32_t tag) override { return inner_->Recv(d, n, peer, tag); }
  absl::Status SendRecv(const float* s, int64_t sn, int sp, uint32_t st, float* r, int64_t rn, int rp,
                        uint32_t rt) override {
    return inner_->SendRecv(s, sn, sp, st, r, rn, rp, rt);
  }
  absl::Status Barrier() override { return inner_->Barrier(); }
  void Abort() override { inner_->Abort(); }
  double seconds = 0;

 private:
  template <typename F>
  absl::Status Time(F&& f) {
    const double t0 = Now();
    absl::Status s = f();
    seconds += Now() - t0;
    return s;
  }
  loom::engine::Communicator* inner_;
};

// `shared_memory`: float all-reduces through the same-host shared-memory path (the default), or
// Gloo's TCP transport only.
absl::StatusOr<std::unique_ptr<loom::engine::Communicator>> Join(
    const std::string& store_dir, int rank, int size, std::unique_ptr<loom::engine::KeyValueStore>* store,
    bool shared_memory = true) {
  *store = loom::engine::NewDirectoryKeyValueStore(store_dir);
  loom::engine::GlooOptions o;
  o.rank = rank;
  o.size = size;
  o.prefix = "bench";
  o.timeout = absl::Seconds(120);
  o.shared_memory = shared_memory;
  return loom::engine::NewGlooCommunicator(store->get(), o);
}

// Rank body of part 1: prints "bytes seconds" lines (rank 0).
int AllReduceRank(const std::string& store_dir, int rank, int size, bool shared_memory) {
  std::unique_ptr<loom::engine::KeyValueStore> store;
  auto comm = Join(store_dir, rank, size, &store, shared_memory);
  if (!comm.ok()) {
    std::fprintf(stderr, "%s\n", std::string(comm.status().message()).c_str());
    return 1;
  }
  for (int64_t bytes = 1024; bytes <= (int64_t{256} << 20); bytes *= 4) {
    std::vector<float> data(bytes / 4, 1.0f);
    const int reps = bytes < (1 << 20) ? 50 : bytes < (16 << 20) ? 10 : 5;
    (void)(*comm)->AllReduceSum(data.data(), data.size());  // warm-up
    (void)(*comm)->Barrier();
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const double t0 = Now();
      if (absl::Status s = (*comm)->AllReduceSum(data.data(), data.size()); !s.ok()) {
        std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
        return 1;
      }
      best = std::min(best, Now() - t0);
    }
    if (rank == 0) std::printf("%lld %.9f\n", static_cast<long long>(bytes), best);
  }
  return 0;
}

const char* kDemoPlan = R"(name: bench
model: {layers: 4, d_model: 256, heads: 4, kv_heads: 2, ffn_size: 704, vocab_size: 4096}
data: {sources: [random]}
stages:
  - name: core
    kind: pretrain
    tokens: 1G
    optimizer: {lr: 1e-4}
    parallel: {micro_batch_size: 4}
    batch_ramp: [{at_tokens: 0, global_batch_tokens: 4096}]
    seq_len_schedule: [{at_tokens: 0, seq_len: 256}]
    data_mix: [{at_tokens: 0, weights: {random: 1}}]
)";

// Rank body of part 2: prints "tokens_per_second allreduce_seconds step_seconds exposed_seconds"
// (rank 0; seconds per step; exposed: what the step waited for the gradients' communication).
int TrainRank(const std::string& store_dir, int rank, int size, int threads, int steps, int64_t bucket_floats) {
  loom::ParsedPlan parsed = loom::ParsePlanText(kDemoPlan, loom::PlanFormat::kYaml);
  std::mt19937 rng(1);
  std::vector<int32_t> tokens(1 << 20);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 4096);
  loom::engine::TokenStreamSource data(std::move(tokens));
  loom::kernels::cpu::SetNumThreads(threads);
  std::unique_ptr<loom::engine::KeyValueStore> store;
  std::unique_ptr<loom::engine::Communicator> comm;
  std::unique_ptr<TimedCommunicator> timed;
  if (size > 1) {
    auto c = Join(store_dir, rank, size, &store);
    if (!c.ok()) return 1;
    comm = std::move(*c);
    timed = std::make_unique<TimedCommunicator>(comm.get());
  }
  loom::engine::TrainerOptions o;
  o.model = parsed.plan.model();
  o.stage = loom::ResolveStage(parsed.plan, 0);
  o.plan_id = "bench";
  o.parallel.data = timed.get();
  o.bucket_floats = bucket_floats;
  auto trainer = loom::engine::Trainer::Create(o, &data);
  if (!trainer.ok()) return 1;
  (void)(*trainer)->Step();
  if (timed) timed->seconds = 0;
  double exposed = 0;
  const double t0 = Now();
  for (int i = 0; i < steps; ++i) {
    auto r = (*trainer)->Step();
    if (!r.ok()) return 1;
    exposed += r->communication_wait_seconds;
  }
  const double seconds = Now() - t0;
  if (rank == 0)
    std::printf("%.3f %.6f %.6f %.6f\n", 4096.0 * steps / seconds, timed ? timed->seconds / steps : 0.0,
                seconds / steps, exposed / steps);
  return 0;
}

// Starts `size` copies of this binary as ranks; returns rank 0's stdout.
std::string RunRanks(const std::string& mode, int size, const std::vector<std::string>& extra) {
  const std::string dir = absl::StrCat(std::filesystem::temp_directory_path().string(),
                                       "/loom_bench_allreduce_", getpid(), "_", mode);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<pid_t> pids;
  for (int r = 0; r < size; ++r) {
    std::vector<std::string> args = {
        "/proc/self/exe",     "--mode",  mode,          "--rank", std::to_string(r), "--size",
        std::to_string(size), "--store", dir + "/store"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string out = absl::StrCat(dir, "/rank", r, ".out");
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    pids.push_back(pid);
  }
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  std::ifstream in(dir + "/rank0.out");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove_all(dir);
  return text;
}

double MemcpySeconds(int64_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const double t0 = Now();
    std::memcpy(b.data(), a.data(), bytes);
    best = std::min(best, Now() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode, store;
  int rank = 0, size = 2, threads = 1, steps = 5;
  std::string transport = "shm";
  int64_t bucket_floats = int64_t{1} << 20;
  loom::CommandLine cl(
      "bench_allreduce",
      "Gloo all-reduce bus bandwidth vs memcpy on loopback, and DP=2 scaling of the demo model.");
  cl.AddFlag("mode", &mode, "internal: rank body to run (allreduce, train); empty runs the benchmark");
  cl.AddFlag("rank", &rank, "internal");
  cl.AddFlag("size", &size, "internal");
  cl.AddFlag("store", &store, "internal");
  cl.AddFlag("threads", &threads, "internal");
  cl.AddFlag("bucket-floats", &bucket_floats, "internal: overlapped all-reduce buckets (0: after the backward)");
  cl.AddFlag("transport", &transport, "internal: shm (same-host shared memory) or tcp (Gloo only)");
  cl.AddFlag("steps", &steps, "training steps timed in part 2");
  int exit_code = 0;
  if (!loom::ParseOrExit(cl, std::vector<std::string>(argv + 1, argv + argc), &exit_code)) return exit_code;
  if (mode == "allreduce") return AllReduceRank(store, rank, size, transport != "tcp");
  if (mode == "train") return TrainRank(store, rank, size, threads, steps, bucket_floats);

  for (const char* kind : {"tcp", "shm"}) {
    std::printf("%s, 2 ranks on this host (bus bandwidth = bytes / time for n = 2)\n",
                std::string(kind) == "tcp" ? "Gloo all-reduce over TCP loopback"
                                           : "Gloo communicator's float all-reduce, same-host shared memory");
    std::printf("%10s %12s %12s %12s %7s\n", "bytes", "time", "bus GB/s", "memcpy GB/s", "ratio");
    const std::string lines = RunRanks("allreduce", 2, {"--transport", kind});
    long long bytes;
    double seconds;
    for (const char* p = lines.c_str(); std::sscanf(p, "%lld %lf", &bytes, &seconds) == 2;) {
      const double bus = bytes / seconds / 1e9;  // 2 (n-1)/n = 1 for n = 2
      const double mem = bytes / MemcpySeconds(bytes) / 1e9;
      std::printf("%10lld %10.1fus %12.2f %12.2f %7.2f\n", bytes, seconds * 1e6, bus, mem, bus / mem);
      p = std::strchr(p, '\n');
      if (p == nullptr) break;
      ++p;
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  std::printf("demo model (4 layers, d_model 256, 4096 tokens/step), same 2 cores, shared memory:\n");
  const std::string one = RunRanks("train", 1, {"--threads", "2", "--steps", std::to_string(steps)});
  double tps1 = 0, ar1 = 0, step1 = 0, exposed1 = 0;
  std::sscanf(one.c_str(), "%lf %lf %lf %lf", &tps1, &ar1, &step1, &exposed1);
  std::printf("  dp=1 x 2 threads: %8.0f tokens/s\n", tps1);
  // The gradients in 1Mi-float buckets beside the backward pass (the default), then in one
  // all-reduce after it.
  for (const char* buckets : {"1048576", "0"}) {
    const std::string two = RunRanks(
        "train", 2, {"--threads", "1", "--steps", std::to_string(steps), "--bucket-floats", buckets});
    double tps2 = 0, ar2 = 0, step2 = 0, exposed2 = 0;
    std::sscanf(two.c_str(), "%lf %lf %lf %lf", &tps2, &ar2, &step2, &exposed2);
    std::printf(
        "  dp=2 x 1 thread, %s: %8.0f tokens/s, efficiency %.2f; all-reduce %.1f ms, the step waited %.1f "
        "ms of %.1f ms (DP overhead %.1f%%)\n",
        std::string(buckets) == "0" ? "one all-reduce after the backward" : "buckets beside the backward",
        tps2, tps2 / std::max(tps1, 1e-9), ar2 * 1e3, exposed2 * 1e3, step2 * 1e3,
        100 * exposed2 / std::max(step2, 1e-9));
  }
  return 0;
}
