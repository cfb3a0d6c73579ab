// Checkpoint averaging and model merging, as in the recipes (Llama 3.1, Gemma 2, AFM):
//
//   linear / uniform / weighted   Σ wᵢθᵢ / Σ wᵢ
//   EMA                           ema ← β·ema + (1−β)·θᵢ, in the given order, starting at θ₁
//   task arithmetic               base + λ·Σ wᵢ(θᵢ − base)
//   SLERP                         spherical interpolation of two models at t, per tensor, with a
//                                 lerp fallback when |cos| > 0.9995
//   TIES                          per tensor: trim each task vector to its `density` largest
//                                 magnitudes, elect each entry's sign from Σ wᵢδᵢ, average the
//                                 entries that agree (weighted, disjoint mean); base + λ·that
//   DARE                          per entry: keep δᵢ with probability `density` (seeded mask),
//                                 rescale by 1/density; then task arithmetic
//
// The math works on tensors (MergeTensors, for tests and any caller); MergeCheckpoints applies it
// to whole checkpoints, tensor by tensor, after checking that every input has the same
// architecture and tokenizer, and writes a weights-only checkpoint that stages can start from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "loom/v1/plan.pb.h"

namespace loom::engine {

enum class MergeMethod { kLinear, kEma, kTaskArithmetic, kSlerp, kTies, kDare };

struct MergeOptions {
  MergeMethod method = MergeMethod::kLinear;
  std::vector<double> weights;  // one per input; empty = all 1
  double lambda = 1.0;          // task-vector scale
  double t = 0.5;               // SLERP position
  double density = 1.0;         // TIES / DARE
  double ema_beta = 0.9;
  uint64_t seed = 0;  // DARE mask
};

// Merges one tensor: `inputs` are the models' values, `base` the base model's (task-vector
// methods; ignored otherwise). `salt` distinguishes tensors in the DARE mask. Every input has
// out->size() entries.
absl::Status MergeTensors(const std::vector<const float*>& inputs, const float* base,
                          const MergeOptions& options, uint64_t salt, std::vector<float>* out);

// Reads (and verifies) `inputs` and `base` (may be empty), merges every tensor and writes a
// weights-only checkpoint at `out_dir` whose manifest names `plan_id`/`stage`/`step`.
absl::Status MergeCheckpoints(const std::vector<std::string>& inputs, const std::string& base,
                              const MergeOptions& options, const std::string& out_dir,
                              const std::string& plan_id, const std::string& stage, int64_t step);

// The options an `average` or `merge` stage asks for (defaults from plan.proto).
MergeOptions MergeOptionsFromStage(const loom::v1::Stage& stage, uint64_t plan_seed);

}  // namespace loom::engine
