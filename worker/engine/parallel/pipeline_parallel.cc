#include "worker/engine/parallel/pipeline_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/optimizer.h"
#include "worker/engine/parallel/tensor_parallel.h"

namespace loom::engine {
namespace {

// Point-to-point tags: micro-batch i's hidden states go forward as 2i, their gradients back as
// 2i + 1; the tied embedding's gradients travel under a tag no micro-batch reaches.
uint32_t ForwardTag(int i) { return 2 * static_cast<uint32_t>(i); }
uint32_t BackwardTag(int i) { return 2 * static_cast<uint32_t>(i) + 1; }
constexpr uint32_t kTiedEmbeddingTag = 0x7fffffff;

}  // namespace

absl::StatusOr<TransformerConfig> PipelineStageConfig(const TransformerConfig& whole, int pp, int pp_rank) {
  if (pp < 1 || pp > whole.layers) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.pp ", pp, " is not in [1, model.layers ", whole.layers,
                                                   "]: every pipeline stage needs at least one layer"));
  }
  if (pp_rank < 0 || pp_rank >= pp) {
    return absl::InvalidArgumentError(absl::StrCat("pipeline stage ", pp_rank, " of ", pp));
  }
  const int base = whole.layers / pp, extra = whole.layers % pp;
  TransformerConfig stage = whole;
  stage.first_layer = whole.first_layer + pp_rank * base + std::min(pp_rank, extra);
  stage.layers = base + (pp_rank < extra ? 1 : 0);
  const int offset = stage.first_layer - whole.first_layer;
  stage.local_layer.assign(whole.local_layer.begin() + offset, whole.local_layer.begin() + offset + stage.layers);
  stage.has_embedding = whole.has_embedding && pp_rank == 0;
  stage.has_head = whole.has_head && pp_rank == pp - 1;
  return stage;
}

absl::Status GatherStages(Communicator& group, const TransformerConfig& whole_config, const float* stage,
                          float* whole) {
  const int pp = group.size();
  std::vector<ParameterLayout> layouts;
  int64_t widest = 0;
  for (int r = 0; r < pp; ++r) {
    LOOM_ASSIGN_OR_RETURN(TransformerConfig config, PipelineStageConfig(whole_config, pp, r));
    layouts.emplace_back(config);
    widest = std::max(widest, layouts.back().total());
  }
  // Stages differ in size: each sends its buffer padded to the widest.
  std::vector<float> mine(widest, 0.0f), all(static_cast<size_t>(widest) * pp);
  std::memcpy(mine.data(), stage, layouts[group.rank()].total() * sizeof(float));
  LOOM_RETURN_IF_ERROR(group.AllGather(mine.data(), widest, all.data()));
  const ParameterLayout whole_layout(whole_config);
  for (int r = 0; r < pp; ++r) UnshardTensors(whole_layout, layouts[r], 1, all.data() + r * widest, whole);
  return absl::OkStatus();
}

absl::Status SumTiedEmbeddingGrads(Communicator& group, Transformer& stage) {
  const int pp = group.size(), rank = group.rank();
  if (!stage.config().tied_embeddings || pp == 1 || (rank != 0 && rank != pp - 1)) return absl::OkStatus();
  const int64_t count = int64_t{stage.config().vocab} * stage.config().d_model;
  float* grads = stage.grads() + stage.layout().embedding();
  std::vector<float> other(count);
  const int peer = rank == 0 ? pp - 1 : 0;
  LOOM_RETURN_IF_ERROR(group.SendRecv(grads, count, peer, kTiedEmbeddingTag, other.data(), count, peer,
                                      kTiedEmbeddingTag));
  for (int64_t i = 0; i < count; ++i) grads[i] += other[i];  // a + b == b + a: both copies agree
  return absl::OkStatus();
}

absl::StatusOr<double> PipelineGradNorm(Communicator& group, const Transformer& stage, Communicator* tensor) {
  // The head's copy of a tied embedding is the first stage's, counted there.
  const bool skip_embedding = !stage.config().has_embedding;
  const bool split_by_tensor = tensor != nullptr && tensor->size() > 1;
  double split = 0, replicated = 0;
  for (const ParamTensor& t : stage.layout().tensors()) {
    if (skip_embedding && t.offset == stage.layout().embedding()) continue;
    const double squares = kernels::cpu::SumSquares(stage.grads() + t.offset, t.size);
    (split_by_tensor && SplitOf(t.name) != TensorSplit::kReplicated ? split : replicated) += squares;
  }
  if (split_by_tensor) LOOM_RETURN_IF_ERROR(tensor->AllReduceSum(&split, 1));
  double squares = split + replicated;
  LOOM_RETURN_IF_ERROR(group.AllReduceSum(&squares, 1));
  return std::sqrt(squares);
}

absl::StatusOr<double> RunOneForwardOneBackward(Communicator& group, Transformer& stage,
                                                const std::vector<data::TokenBatch>& micro_batches,
                                                const MicroBatchLoss& loss) {
  const int s = group.rank(), pp = group.size(), m = static_cast<int>(micro_batches.size());
  const bool first = s == 0, last = s == pp - 1;
  if (first != stage.config().has_embedding || last != stage.config().has_head) {
    return absl::FailedPreconditionError(absl::StrCat("pipeline rank ", s, " of ", pp, " holds the wrong stage"));
  }
  const int64_t d = stage.config().d_model;
  auto hidden = [&](int i) { return micro_batches[i].tokens() * d; };
  std::vector<std::vector<float>> inputs(m);  // received hidden states, until the backward
  std::vector<float> output_grad;
  double loss_sum = 0;

  auto receive_input = [&](int i) -> absl::Status {
    if (first) return absl::OkStatus();
    inputs[i].resize(hidden(i));
    return group.Recv(inputs[i].data(), hidden(i), s - 1, ForwardTag(i));
  };
  auto forward = [&](int i) -> absl::StatusOr<float*> {
    LOOM_ASSIGN_OR_RETURN(float* out, stage.RunForward(micro_batches[i], first ? nullptr : inputs[i].data()));
    if (last) {
      LOOM_ASSIGN_OR_RETURN(double l, loss(micro_batches[i], out));
      loss_sum += l;
    }
    return out;
  };
  // Backward of micro-batch i from d(loss)/d(output): a stage other than the last recomputes the
  // forward first (its activations are a later micro-batch's by now).
  auto backward = [&](int i, const float* output_grad_i) -> absl::Status {
    if (!last) {
      LOOM_ASSIGN_OR_RETURN(float* recomputed, stage.RunForward(micro_batches[i], first ? nullptr : inputs[i].data()));
      (void)recomputed;
    }
    LOOM_RETURN_IF_ERROR(stage.RunBackward(output_grad_i));
    std::vector<float>().swap(inputs[i]);
    return absl::OkStatus();
  };

  const int warmup = std::min(pp - s - 1, m), steady = m - warmup;
  for (int i = 0; i < warmup; ++i) {  // forwards only (never the last stage)
    LOOM_RETURN_IF_ERROR(receive_input(i));
    LOOM_ASSIGN_OR_RETURN(float* out, forward(i));
    LOOM_RETURN_IF_ERROR(group.Send(out, hidden(i), s + 1, ForwardTag(i)));
  }
  if (steady > 0) LOOM_RETURN_IF_ERROR(receive_input(warmup));
  for (int k = 0; k < steady; ++k) {  // one forward (micro-batch i), one backward (micro-batch k)
    const int i = warmup + k;
    LOOM_ASSIGN_OR_RETURN(float* out, forward(i));
    const float* grad = out;  // the last stage: the loss wrote d(loss)/d(logits) there, and k == i
    if (!last) {
      output_grad.resize(hidden(k));
      LOOM_RETURN_IF_ERROR(group.SendRecv(out, hidden(i), s + 1, ForwardTag(i), output_grad.data(), hidden(k),
                                          s + 1, BackwardTag(k)));
      grad = output_grad.data();
    }
    LOOM_RETURN_IF_ERROR(backward(k, grad));
    if (first) continue;
    if (k + 1 < steady) {
      inputs[i + 1].resize(hidden(i + 1));
      LOOM_RETURN_IF_ERROR(group.SendRecv(stage.input_grad(), hidden(k), s - 1, BackwardTag(k),
                                          inputs[i + 1].data(), hidden(i + 1), s - 1, ForwardTag(i + 1)));
    } else {
      LOOM_RETURN_IF_ERROR(group.Send(stage.input_grad(), hidden(k), s - 1, BackwardTag(k)));
    }
  }
  for (int k = steady; k < m; ++k) {  // the remaining backwards (never the last stage)
    output_grad.resize(hidden(k));
    LOOM_RETURN_IF_ERROR(group.Recv(output_grad.data(), hidden(k), s + 1, BackwardTag(k)));
    LOOM_RETURN_IF_ERROR(backward(k, output_grad.data()));
    if (!first) LOOM_RETURN_IF_ERROR(group.Send(stage.input_grad(), hidden(k), s - 1, BackwardTag(k)));
  }
  return loss_sum;
}

}  // namespace loom::engine
