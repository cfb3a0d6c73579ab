// A stage's schedules as pure functions of the tokens it has consumed, so that any rank, and any
// resumed attempt, computes the same learning rate, batch size and sequence length for a step.
#pragma once

#include <cstdint>

#include "loom/v1/plan.pb.h"

namespace loom::engine {

// The learning rate for a step that starts after `tokens` of a `total_tokens` stage:
//   warmup     peak · min(1, (tokens + 1) / warmup_tokens)
//   then, with q = (tokens − warmup) / (total − warmup) in [0, 1] and min = peak · min_lr_ratio:
//   constant   peak
//   cosine     min + (peak − min) · (1 + cos(π q)) / 2
//   linear     peak − (peak − min) · q
//   wsd        peak until the last decay_fraction of the stage, then linear to min
// `schedule` must be resolved (plan_resolve.h): its type is never *_UNSPECIFIED.
double LearningRate(const loom::v1::LrSchedule& schedule, double peak_lr, int64_t tokens,
                    int64_t total_tokens);

// The entry of batch_ramp / seq_len_schedule in force at `tokens`: the last with at_tokens <= tokens.
int64_t GlobalBatchTokens(const loom::v1::Stage& stage, int64_t tokens);
int SeqLen(const loom::v1::Stage& stage, int64_t tokens);

}  // namespace loom::engine
