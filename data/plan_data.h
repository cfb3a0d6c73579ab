// The bridge from a plan (proto/loom/v1/plan.proto) to the sampler: a stage's data_mix as the
// sampler's schedule, and sampler options for a stage of a plan over a prepared directory.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/sampler.h"
#include "loom/v1/plan.pb.h"

namespace loom::data {

// Stage.data_mix, in order (the plan validator has checked that it starts at 0 and increases).
std::vector<MixPoint> MixSchedule(const loom::v1::Stage& stage);

// Options for `stage`: every source its mix names, read from <data_dir>/<source>/train, the
// tokenizer's hash expected of every shard, the model's vocab as the largest shard vocab, and
// `seed`. `data_dir` is the plan's
// data.dir (or the coordinator's default); the tokenizer is data.tokenizer or
// <data_dir>/tokenizer.model.
absl::StatusOr<SamplerOptions> SamplerOptionsForStage(const loom::v1::TrainingPlan& plan,
                                                      const loom::v1::Stage& stage,
                                                      const std::string& data_dir, uint64_t seed);

}  // namespace loom::data
