#include "worker/engine/parallel/parallel_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/optimizer.h"
#include "worker/engine/model/checkpoint.h"
#include "worker/engine/parallel/pipeline_parallel.h"
#include "worker/engine/parallel/tensor_parallel.h"

namespace loom::engine {

absl::StatusOr<std::unique_ptr<ParallelModel>> ParallelModel::Create(ParallelModelOptions options) {
  std::unique_ptr<ParallelModel> m(new ParallelModel(std::move(options)));
  const TransformerConfig& whole = m->options_.whole;
  if (m->options_.zero1 && m->model_parallel()) {
    return absl::UnimplementedError(absl::StrCat("parallel.zero1 shards the whole parameter buffer: it does not run with "
                                                 "parallel.tp ", m->tp_size(), ", parallel.pp ", m->pp_size(),
                                                 "; use zero1: false under tensor or pipeline parallelism"));
  }
  if (m->model_parallel()) {
    m->whole_layout_ = std::make_unique<ParameterLayout>(whole);
    // A pipeline stage's layers (all of them without pipeline parallelism), split across the
    // tensor group (not at all without tensor parallelism).
    LOOM_ASSIGN_OR_RETURN(m->stage_config_, PipelineStageConfig(whole, m->pp_size(), m->pp_rank()));
    LOOM_ASSIGN_OR_RETURN(TransformerConfig shard, TensorParallelConfig(m->stage_config_, m->tp_size()));
    m->model_ = std::make_unique<Transformer>(shard, m->options_.groups.tensor);
  } else {
    m->model_ = std::make_unique<Transformer>(whole);
  }
  OptimizerShard shard;
  if (m->zero1()) {
    shard.begin = std::min<int64_t>(m->dp_rank() * m->ZeroChunk(), m->model_->num_params());
    shard.end = std::min<int64_t>(shard.begin + m->ZeroChunk(), m->model_->num_params());
  }
  m->optimizer_ = std::make_unique<Optimizer>(m->model_->layout(), m->options_.optimizer, shard);
  if (m->dp_size() > 1 && !m->zero1() && !m->model_parallel() && m->options_.bucket_floats > 0) {
    m->overlap_ = std::make_unique<OverlappedAllReduce>(m->options_.groups.data, m->options_.bucket_floats);
  }
  return m;
}

void ParallelModel::InitWeights(uint64_t seed) {
  if (!model_parallel()) {
    model_->InitWeights(seed);
    return;
  }
  // The whole model from the seed, then this rank's part of it: the same weights in every layout.
  Transformer whole(options_.whole);
  whole.InitWeights(seed);
  ShardTensors(whole.layout(), whole.params(), model_->layout(), tp_rank(), tp_size(), model_->params());
}

absl::Status ParallelModel::LoadWeights(const std::string& checkpoint) {
  return Load(checkpoint, /*optimizer=*/false).status();
}

absl::StatusOr<loom::v1::CheckpointManifest> ParallelModel::Resume(const std::string& checkpoint) {
  return Load(checkpoint, /*optimizer=*/true);
}

absl::StatusOr<loom::v1::CheckpointManifest> ParallelModel::Load(const std::string& checkpoint, bool optimizer) {
  // Checkpoints hold the whole model and optimizer state whatever the layout: under tensor or
  // pipeline parallelism they load into a whole model first and each rank keeps its part.
  std::unique_ptr<Transformer> whole_model;
  if (model_parallel()) whole_model = std::make_unique<Transformer>(options_.whole);
  Transformer* target = whole_model ? whole_model.get() : model_.get();
  LOOM_ASSIGN_OR_RETURN(loom::v1::CheckpointManifest manifest, engine::LoadWeights(checkpoint, target));
  if (optimizer) {
    const bool sharded = zero1() || whole_model;
    Optimizer whole(target->layout(), optimizer_->settings());
    LOOM_RETURN_IF_ERROR(LoadOptimizerState(checkpoint, manifest, sharded ? &whole : optimizer_.get()));
    if (zero1()) optimizer_->CopyShardFrom(whole);
    if (whole_model) {
      ShardTensors(whole.layout(), whole.first_moment().data(), model_->layout(), tp_rank(), tp_size(),
                   optimizer_->first_moment().data());
      if (whole.has_second_moment()) {
        ShardTensors(whole.layout(), whole.second_moment().data(), model_->layout(), tp_rank(), tp_size(),
                     optimizer_->second_moment().data());
      }
      optimizer_->set_step(whole.step());
    }
  }
  if (whole_model) {
    ShardTensors(whole_model->layout(), whole_model->params(), model_->layout(), tp_rank(), tp_size(),
                 model_->params());
  }
  return manifest;
}

void ParallelModel::BeginLastBackward() {
  if (!overlap_) return;
  overlap_->Start(model_->grads());
  model_->set_on_grads_ready([this](int64_t begin, int64_t end) { overlap_->Ready(begin, end); });
  overlapping_ = true;
}

absl::StatusOr<double> ParallelModel::ReduceGradients() {
  if (overlapping_) {
    overlapping_ = false;
    model_->set_on_grads_ready(nullptr);
    LOOM_RETURN_IF_ERROR(overlap_->Finish());
    return overlap_->exposed_seconds();
  }
  Communicator* data = options_.groups.data;
  if (!data) return 0.0;
  const auto start = std::chrono::steady_clock::now();
  const int64_t n = model_->num_params();
  if (!zero1()) {
    LOOM_RETURN_IF_ERROR(data->AllReduceSum(model_->grads(), n));
  } else {
    const int64_t chunk = ZeroChunk();
    zero1_padded_.assign(static_cast<size_t>(chunk) * dp_size(), 0.0f);
    std::copy(model_->grads(), model_->grads() + n, zero1_padded_.begin());
    zero1_chunk_.resize(chunk);
    LOOM_RETURN_IF_ERROR(data->ReduceScatterSum(zero1_padded_.data(), chunk, zero1_chunk_.data()));
    // Only this rank's chunk of model_->grads() holds sums from here on; the rest is stale.
    std::copy(zero1_chunk_.begin(), zero1_chunk_.begin() + (optimizer_->shard_end() - optimizer_->shard_begin()),
              model_->grads() + optimizer_->shard_begin());
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::StatusOr<double> ParallelModel::ApplyOptimizer(float lr) {
  double norm = 0;
  if (zero1()) {
    // The global norm from every rank's chunk, then each rank updates its chunk and the updated
    // chunks are gathered into every rank's weights.
    const int64_t begin = optimizer_->shard_begin(), owned = optimizer_->shard_end() - begin;
    double squares = kernels::cpu::SumSquares(model_->grads() + begin, owned);
    LOOM_RETURN_IF_ERROR(options_.groups.data->AllReduceSum(&squares, 1));
    norm = std::sqrt(squares);
    optimizer_->StepShard(model_->params(), model_->grads(), lr, norm);
    LOOM_RETURN_IF_ERROR(GatherChunks(model_->params() + begin, model_->params()));
  } else if (pp_size() > 1) {
    LOOM_RETURN_IF_ERROR(SumTiedEmbeddingGrads(*options_.groups.pipeline, *model_));
    LOOM_ASSIGN_OR_RETURN(norm, PipelineGradNorm(*options_.groups.pipeline, *model_, options_.groups.tensor));
    optimizer_->StepShard(model_->params(), model_->grads(), lr, norm);
  } else if (tp_size() > 1) {
    LOOM_ASSIGN_OR_RETURN(norm, TensorParallelGradNorm(*options_.groups.tensor, model_->layout(), model_->grads()));
    optimizer_->StepShard(model_->params(), model_->grads(), lr, norm);
  } else {
    norm = optimizer_->Step(model_->params(), model_->grads(), lr);
  }
  return norm;
}

absl::Status ParallelModel::GatherWhole(const float* local, float* whole) {
  if (pp_size() == 1) return GatherTensors(*options_.groups.tensor, *whole_layout_, model_->layout(), local, whole);
  std::vector<float> stage;
  if (tp_size() > 1) {  // this stage's tensors from the tensor group, then the stages
    const ParameterLayout stage_layout(stage_config_);
    stage.assign(stage_layout.total(), 0.0f);
    LOOM_RETURN_IF_ERROR(GatherTensors(*options_.groups.tensor, stage_layout, model_->layout(), local, stage.data()));
    local = stage.data();
  }
  return GatherStages(*options_.groups.pipeline, options_.whole, local, whole);
}

absl::StatusOr<std::vector<float>> ParallelModel::WholeWeights() {
  if (!model_parallel()) return std::vector<float>(model_->params(), model_->params() + model_->num_params());
  std::vector<float> whole(whole_layout_->total(), 0.0f);
  LOOM_RETURN_IF_ERROR(GatherWhole(model_->params(), whole.data()));
  return whole;
}

absl::Status ParallelModel::GatherChunks(const float* chunk, float* whole) {
  const int64_t size = ZeroChunk(), owned = optimizer_->shard_end() - optimizer_->shard_begin();
  zero1_chunk_.assign(size, 0.0f);  // the last rank's chunk may be short: padded with zeros
  std::copy(chunk, chunk + owned, zero1_chunk_.begin());
  zero1_padded_.resize(static_cast<size_t>(size) * dp_size());
  LOOM_RETURN_IF_ERROR(options_.groups.data->AllGather(zero1_chunk_.data(), size, zero1_padded_.data()));
  std::copy(zero1_padded_.begin(), zero1_padded_.begin() + model_->num_params(), whole);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Optimizer>> ParallelModel::WholeOptimizer() {
  if (model_parallel()) {
    auto whole = std::make_unique<Optimizer>(*whole_layout_, optimizer_->settings());
    LOOM_RETURN_IF_ERROR(GatherWhole(optimizer_->first_moment().data(), whole->first_moment().data()));
    if (whole->has_second_moment()) {
      LOOM_RETURN_IF_ERROR(GatherWhole(optimizer_->second_moment().data(), whole->second_moment().data()));
    }
    whole->set_step(optimizer_->step());
    return whole;
  }
  if (!zero1()) return std::unique_ptr<Optimizer>();
  auto whole = std::make_unique<Optimizer>(model_->layout(), optimizer_->settings());
  LOOM_RETURN_IF_ERROR(GatherChunks(optimizer_->first_moment().data(), whole->first_moment().data()));
  if (whole->has_second_moment()) {
    LOOM_RETURN_IF_ERROR(GatherChunks(optimizer_->second_moment().data(), whole->second_moment().data()));
  }
  whole->set_step(optimizer_->step());
  return whole;
}

absl::Status ParallelModel::Save(const std::string& dir, loom::v1::CheckpointManifest manifest,
                                 const SaveRetry& retry, absl::Status* written) {
  *written = absl::OkStatus();
  // Every rank takes part in gathering the state the writer writes.
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Optimizer> gathered, WholeOptimizer());
  std::unique_ptr<Transformer> whole_model;
  if (model_parallel()) {
    // Every rank joins the gather; only the writer keeps a whole model to write.
    LOOM_ASSIGN_OR_RETURN(std::vector<float> weights, WholeWeights());
    if (writer()) {
      whole_model = std::make_unique<Transformer>(options_.whole);
      std::copy(weights.begin(), weights.end(), whole_model->params());
    }
  }
  if (writer()) {
    manifest.set_dp(dp_size());
    manifest.set_tp(tp_size());
    manifest.set_pp(pp_size());
    absl::Duration pause = retry.backoff;
    for (int attempt = 1;; ++attempt) {
      *written = retry.inject ? retry.inject() : absl::OkStatus();
      if (written->ok()) {
        *written = SaveCheckpoint(dir, whole_model ? *whole_model : *model_,
                                  gathered ? gathered.get() : optimizer_.get(), manifest);
      }
      if (written->ok() || attempt >= retry.tries) break;
      std::fprintf(stderr, "checkpoint %s: the write failed (try %d of %d): %s; trying again in %s\n", dir.c_str(),
                   attempt, retry.tries, std::string(written->message()).c_str(),
                   absl::FormatDuration(pause).c_str());
      absl::SleepFor(pause);
      pause *= 2;
    }
  }
  // The writer holds one copy of the (replicated or gathered) state; every rank returns once it
  // is durable. Model-parallel groups first, then the data group: each data-parallel peer of the
  // writer's group passes only after that group has seen the writer.
  if (options_.groups.tensor) LOOM_RETURN_IF_ERROR(options_.groups.tensor->Barrier());
  if (options_.groups.pipeline) LOOM_RETURN_IF_ERROR(options_.groups.pipeline->Barrier());
  if (options_.groups.data) LOOM_RETURN_IF_ERROR(options_.groups.data->Barrier());
  return absl::OkStatus();
}

}  // namespace loom::engine
