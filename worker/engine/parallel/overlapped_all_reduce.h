// Data parallelism's gradient all-reduce, overlapped with the backward pass: the model reports
// each range of the gradient buffer as soon as its last contribution is in (a layer, going
// backwards), adjacent ranges are packed into buckets, and a background thread all-reduces each
// full bucket while the backward pass computes the layers below. The step then waits only for what
// is left (the last bucket), which is the communication the backward did not hide.
//
// Every rank reports the same ranges in the same order, so the buckets, and the collectives, line
// up across ranks. The group must not be used by anyone else between Start and Finish.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "worker/engine/parallel/communicator.h"

namespace loom::engine {

class OverlappedAllReduce {
 public:
  // Buckets of at least `bucket_floats` (the last one of a step may be smaller).
  OverlappedAllReduce(Communicator* group, int64_t bucket_floats);
  ~OverlappedAllReduce();
  OverlappedAllReduce(const OverlappedAllReduce&) = delete;
  OverlappedAllReduce& operator=(const OverlappedAllReduce&) = delete;

  // Begins a step over `grads` (the whole gradient buffer).
  void Start(float* grads);
  // grads[begin, end) is final on this rank: packed with the ranges before it when adjacent, and
  // sent once its bucket is full.
  void Ready(int64_t begin, int64_t end);
  // Sends the last bucket and waits for every all-reduce of the step; the first error, if any.
  absl::Status Finish();
  // Seconds the last Finish waited: communication the backward pass did not hide.
  double exposed_seconds() const { return exposed_seconds_; }

 private:
  void Send(int64_t begin, int64_t end);
  void Loop();

  Communicator* group_;
  int64_t bucket_floats_;
  float* grads_ = nullptr;
  int64_t bucket_begin_ = 0, bucket_end_ = 0;  // the bucket being filled (empty when equal)
  double exposed_seconds_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<int64_t, int64_t>> queue_;  // buckets to all-reduce, in order
  int in_flight_ = 0;                              // queued or being reduced
  absl::Status error_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace loom::engine
