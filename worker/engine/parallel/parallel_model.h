// This rank's part of the model under its data-, tensor- and pipeline-parallel layout, with its
// optimizer state: everything in a training step that depends on the layout lives here, so the
// training loop (training/trainer.h) reads the same for one process and for dp × tp × pp ranks.
//
//   layout              this rank holds                          its optimizer state covers
//   one process / dp    the whole model (a replica)              the whole buffer
//   dp + parallel.zero1 the whole model                          one chunk of ceil(params / dp)
//   tp                  its heads, MLP slice, vocabulary rows     its shard
//   pp                  its stage's layers                        its stage
//   tp × pp (+ dp)      its stage, split across its tensor group  its shard of its stage
//
// Checkpoints always hold the whole model and optimizer state: Save gathers them (tensor group,
// then stages, or ZeRO-1 chunks) and one rank, the writer, writes; Resume and LoadWeights read a
// whole checkpoint and keep this rank's part. So any layout resumes any other.
//
// Gradients: the objective's micro-batches add into model().grads(); ReduceGradients sums them over
// the data-parallel group (during the last micro-batch's backward when it can: BeginLastBackward),
// and ApplyOptimizer clips by the norm over the whole model and updates this rank's part.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "loom/v1/checkpoint.pb.h"
#include "worker/engine/model/optimizer.h"
#include "worker/engine/model/transformer.h"
#include "worker/engine/parallel/communicator.h"
#include "worker/engine/parallel/overlapped_all_reduce.h"
#include "worker/engine/parallel/process_groups.h"

namespace loom::engine {

struct ParallelModelOptions {
  // The model's architecture, unsharded.
  TransformerConfig whole;
  // The rank's groups (not owned; null or size 1: none). Ranks are ordered (dp, pp, tp), tp
  // innermost: rank = (dp_rank · pp + pp_rank) · tp + tp_rank.
  ParallelGroups groups;
  OptimizerSettings optimizer;
  // ZeRO-1 (parallel.zero1; data parallelism alone): each data-parallel rank owns the optimizer
  // state of one contiguous chunk; gradients are reduce-scattered and updated chunks all-gathered.
  bool zero1 = false;
  // Data parallelism without ZeRO-1 or model parallelism: the last micro-batch's gradients are
  // all-reduced in buckets of this many floats while its backward goes on; 0: one all-reduce
  // after the backward.
  int64_t bucket_floats = int64_t{1} << 20;
};

class ParallelModel {
 public:
  // Builds this rank's part (uninitialised weights: call one of InitWeights, LoadWeights, Resume).
  // Fails when the layout does not fit the model (an error names parallel.tp or parallel.pp).
  static absl::StatusOr<std::unique_ptr<ParallelModel>> Create(ParallelModelOptions options);

  // This rank's part: under tensor parallelism its shard, under pipeline parallelism its stage.
  Transformer& model() { return *model_; }
  const TransformerConfig& whole_config() const { return options_.whole; }
  const ParallelGroups& groups() const { return options_.groups; }
  int64_t optimizer_step() const { return optimizer_->step(); }

  // The starting weights, one of three: random from `seed`; a checkpoint's weights (a stage's
  // `from`); or a checkpoint's weights and optimizer state (a resume), returning its manifest
  // for the caller's part of the state (data position, RNG, tokens).
  void InitWeights(uint64_t seed);
  absl::Status LoadWeights(const std::string& checkpoint);
  absl::StatusOr<loom::v1::CheckpointManifest> Resume(const std::string& checkpoint);

  // Before the last micro-batch's backward: data parallelism starts reducing each range of the
  // gradients as the backward completes it (when the layout allows; else nothing).
  void BeginLastBackward();
  // The step's gradients summed over the data-parallel ranks (ZeRO-1: each rank's chunk).
  // Returns the seconds the step waited for it (what the backward pass did not hide).
  absl::StatusOr<double> ReduceGradients();
  // Clips by the gradient norm over the whole model and updates this rank's part at `lr`;
  // returns the norm before clipping. A collective under ZeRO-1, tp and pp.
  absl::StatusOr<double> ApplyOptimizer(float lr);

  // The whole model's weights laid out by ParameterLayout(whole_config()): gathered from the group
  // under tensor or pipeline parallelism (a collective every rank of the group must join).
  absl::StatusOr<std::vector<float>> WholeWeights();
  // How the writer handles a failed write (a full disk, an I/O error): it tries `tries` times in
  // all, waiting `backoff`, then twice that, ... between tries, while its peers wait at the
  // barrier that ends Save. `inject` (tests) runs before each try; an error from it fails the try
  // as the disk would.
  struct SaveRetry {
    int tries = 1;
    absl::Duration backoff = absl::Seconds(1);
    std::function<absl::Status()> inject;
  };
  // Writes checkpoint `dir` (the whole model and optimizer state, gathered: a collective) with
  // `manifest` (what the caller knows: step, tokens, data and RNG state); the layout is added
  // here. Only the writer writes; every rank returns once the writer is done. The result is an
  // error only when the collectives fail (the group is broken); whether the writer's copy is
  // durable goes to `*written` (always OK on the other ranks), so that a failed write costs a
  // checkpoint, not the group.
  absl::Status Save(const std::string& dir, loom::v1::CheckpointManifest manifest, const SaveRetry& retry,
                    absl::Status* written);
  // The rank that writes checkpoints: the first of its data-, tensor- and pipeline-parallel groups.
  bool writer() const { return dp_rank() == 0 && tp_rank() == 0 && pp_rank() == 0; }

  int dp_rank() const { return Rank(options_.groups.data); }
  int dp_size() const { return Size(options_.groups.data); }
  int tp_rank() const { return Rank(options_.groups.tensor); }
  int tp_size() const { return Size(options_.groups.tensor); }
  int pp_rank() const { return Rank(options_.groups.pipeline); }
  int pp_size() const { return Size(options_.groups.pipeline); }
  // This rank holds a part of the model (tensor or pipeline parallel).
  bool model_parallel() const { return tp_size() > 1 || pp_size() > 1; }

 private:
  explicit ParallelModel(ParallelModelOptions options) : options_(std::move(options)) {}
  static int Rank(const Communicator* group) { return group && group->size() > 1 ? group->rank() : 0; }
  static int Size(const Communicator* group) { return group ? group->size() : 1; }
  bool zero1() const { return options_.zero1 && dp_size() > 1; }
  int64_t ZeroChunk() const { return (model_->num_params() + dp_size() - 1) / dp_size(); }
  // Loads a whole checkpoint's weights (and with `optimizer`, its state) and keeps this rank's part.
  absl::StatusOr<loom::v1::CheckpointManifest> Load(const std::string& checkpoint, bool optimizer);
  // ZeRO-1: every rank's chunk of a parameter-sized buffer gathered into `whole`.
  absl::Status GatherChunks(const float* chunk, float* whole);
  // Tensor or pipeline parallel: every rank's `local` buffer (laid out like its parameters)
  // gathered into `whole` (laid out like the whole model's).
  absl::Status GatherWhole(const float* local, float* whole);
  // The whole optimizer state for a checkpoint (gathered under ZeRO-1, tp or pp; a collective);
  // null when this rank's optimizer is the whole one.
  absl::StatusOr<std::unique_ptr<Optimizer>> WholeOptimizer();

  ParallelModelOptions options_;
  TransformerConfig stage_config_;                 // this pipeline stage's, before the tensor split
  std::unique_ptr<ParameterLayout> whole_layout_;  // tensor or pipeline parallel only
  std::unique_ptr<Transformer> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<float> zero1_padded_, zero1_chunk_;  // ZeRO-1's [dp * chunk] and [chunk] buffers
  std::unique_ptr<OverlappedAllReduce> overlap_;   // bucketed all-reduce beside the backward
  bool overlapping_ = false;                       // BeginLastBackward started it this step
};

}  // namespace loom::engine
