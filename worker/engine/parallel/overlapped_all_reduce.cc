#include "worker/engine/parallel/overlapped_all_reduce.h"

#include <chrono>

namespace loom::engine {

OverlappedAllReduce::OverlappedAllReduce(Communicator* group, int64_t bucket_floats)
    : group_(group), bucket_floats_(bucket_floats), thread_([this] { Loop(); }) {}

OverlappedAllReduce::~OverlappedAllReduce() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OverlappedAllReduce::Start(float* grads) {
  grads_ = grads;
  bucket_begin_ = bucket_end_ = 0;
  std::lock_guard<std::mutex> lock(mu_);
  error_ = absl::OkStatus();
}

void OverlappedAllReduce::Ready(int64_t begin, int64_t end) {
  if (begin >= end) return;
  if (bucket_begin_ == bucket_end_) {
    bucket_begin_ = begin;
    bucket_end_ = end;
  } else if (end == bucket_begin_) {  // the backward pass goes down the buffer
    bucket_begin_ = begin;
  } else if (begin == bucket_end_) {
    bucket_end_ = end;
  } else {
    Send(bucket_begin_, bucket_end_);
    bucket_begin_ = begin;
    bucket_end_ = end;
  }
  if (bucket_end_ - bucket_begin_ >= bucket_floats_) {
    Send(bucket_begin_, bucket_end_);
    bucket_begin_ = bucket_end_ = 0;
  }
}

void OverlappedAllReduce::Send(int64_t begin, int64_t end) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace_back(begin, end);
    ++in_flight_;
  }
  cv_.notify_all();
}

absl::Status OverlappedAllReduce::Finish() {
  if (bucket_begin_ != bucket_end_) Send(bucket_begin_, bucket_end_);
  bucket_begin_ = bucket_end_ = 0;
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return in_flight_ == 0; });
  exposed_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return error_;
}

void OverlappedAllReduce::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping
    const auto [begin, end] = queue_.front();
    queue_.pop_front();
    const bool failed = !error_.ok();
    lock.unlock();
    // After a failure the rest is skipped: the group is broken and the step fails anyway.
    const absl::Status s = failed ? absl::OkStatus() : group_->AllReduceSum(grads_ + begin, end - begin);
    lock.lock();
    if (!s.ok() && error_.ok()) error_ = s;
    --in_flight_;
    cv_.notify_all();
  }
}

}  // namespace loom::engine
