#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::kernels::cpu {
namespace {

// Workers wait on a generation counter; each job hands out chunks through an atomic index, so
// the caller works too and load balances without a queue.
class Pool {
 public:
  explicit Pool(int threads) { Resize(threads); }
  ~Pool() { Stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void Resize(int threads) {
    Stop();
    stop_ = false;
    for (int i = 1; i < std::max(1, threads); ++i) workers_.emplace_back([this] { Work(); });
  }

  void Run(int64_t chunks, const std::function<void(int64_t)>& body) {
    if (chunks == 1 || workers_.empty()) {
      for (int64_t c = 0; c < chunks; ++c) body(c);
      return;
    }
    std::unique_lock<std::mutex> run_lock(run_mu_);  // one job at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      body_ = &body;
      chunks_ = chunks;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      ++generation_;
    }
    wake_.notify_all();
    Drain();
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return active_ == 0; });
    body_ = nullptr;
  }

 private:
  void Drain() {
    for (int64_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) (*body_)(c);
  }

  void Work() {
    uint64_t seen = 0;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      Drain();
      std::lock_guard<std::mutex> lock(mu_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mu_;
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

thread_local bool in_parallel_region = false;

Pool& GetPool() {
  static Pool pool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

}  // namespace

void SetNumThreads(int threads) { GetPool().Resize(threads); }
int NumThreads() { return GetPool().size(); }

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = NumChunks(n, grain);
  if (in_parallel_region) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  GetPool().Run(chunks, [&](int64_t c) {
    const bool outer = in_parallel_region;
    in_parallel_region = true;
    fn(c * grain, std::min(n, (c + 1) * grain));
    in_parallel_region = outer;
  });
}

}  // namespace loom::kernels::cpu
