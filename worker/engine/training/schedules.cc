#include "worker/engine/training/schedules.h"

#include <algorithm>
#include <cmath>

namespace loom::engine {

double LearningRate(const loom::v1::LrSchedule& s, double peak, int64_t tokens, int64_t total) {
  const int64_t warmup = s.warmup_tokens();
  if (tokens < warmup) return peak * std::min(1.0, static_cast<double>(tokens + 1) / warmup);
  const double min = peak * s.min_lr_ratio();
  const double q =
      total > warmup ? std::clamp(static_cast<double>(tokens - warmup) / (total - warmup), 0.0, 1.0) : 1.0;
  switch (s.type()) {
    case loom::v1::LrSchedule::TYPE_CONSTANT:
      return peak;
    case loom::v1::LrSchedule::TYPE_LINEAR:
      return peak - (peak - min) * q;
    case loom::v1::LrSchedule::TYPE_WSD: {
      const double decay_start = static_cast<double>(total) * (1.0 - s.decay_fraction());
      if (tokens <= decay_start) return peak;
      const double r = std::clamp((tokens - decay_start) / (total - decay_start), 0.0, 1.0);
      return peak - (peak - min) * r;
    }
    case loom::v1::LrSchedule::TYPE_COSINE:
    default:
      return min + (peak - min) * 0.5 * (1.0 + std::cos(M_PI * q));
  }
}

int64_t GlobalBatchTokens(const loom::v1::Stage& stage, int64_t tokens) {
  int64_t batch = 0;
  for (const auto& e : stage.batch_ramp()) {
    if (e.at_tokens() <= tokens) batch = e.global_batch_tokens();
  }
  return batch;
}

int SeqLen(const loom::v1::Stage& stage, int64_t tokens) {
  int seq = 0;
  for (const auto& e : stage.seq_len_schedule()) {
    if (e.at_tokens() <= tokens) seq = e.seq_len();
  }
  return seq;
}

}  // namespace loom::engine
