#include "worker/engine/parallel/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/vec_math.h"

namespace loom::engine {

TensorSplit SplitOf(const std::string& name) {
  for (const char* rows : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight",
                           "up_proj.weight", "embed_tokens.weight", "lm_head.weight"}) {
    if (absl::EndsWith(name, rows)) return TensorSplit::kRows;
  }
  if (absl::EndsWith(name, "o_proj.weight") || absl::EndsWith(name, "down_proj.weight")) {
    return TensorSplit::kColumns;
  }
  return TensorSplit::kReplicated;
}

absl::StatusOr<TransformerConfig> TensorParallelConfig(const TransformerConfig& whole, int tp) {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("parallel.tp must be at least 1, not ", tp));
  const std::pair<const char*, int> fields[] = {
      {"model.heads", whole.heads}, {"model.kv_heads", whole.kv_heads},
      {"model.ffn_size", whole.ffn}, {"model.vocab_size", whole.vocab}};
  for (const auto& [field, value] : fields) {
    if (value % tp != 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, " ", value, " is not divisible by parallel.tp ", tp,
                                                     ": tensor parallelism splits it evenly across the ranks "
                                                     "(choose a tp that divides it, or pad it)"));
    }
  }
  TransformerConfig shard = whole;
  shard.heads /= tp;
  shard.kv_heads /= tp;
  shard.ffn /= tp;
  shard.vocab /= tp;
  return shard;
}

namespace {

// Calls copy(whole_offset, shard_offset, floats) for every contiguous run of rank's shard.
template <typename Copy>
void ForEachShardRun(const ParameterLayout& whole_layout, const ParameterLayout& shard_layout, int tp_rank,
                     Copy copy) {
  for (const ParamTensor& s : shard_layout.tensors()) {
    const ParamTensor* w = whole_layout.Find(s.name);
    switch (SplitOf(s.name)) {
      case TensorSplit::kReplicated:
        copy(w->offset, s.offset, s.size);
        break;
      case TensorSplit::kRows:  // a contiguous block of rows
        copy(w->offset + tp_rank * s.size, s.offset, s.size);
        break;
      case TensorSplit::kColumns: {  // [rows, cols/tp] out of [rows, cols]
        const int64_t rows = s.shape[0], cols = s.shape[1], whole_cols = w->shape[1];
        for (int64_t r = 0; r < rows; ++r) copy(w->offset + r * whole_cols + tp_rank * cols, s.offset + r * cols, cols);
        break;
      }
    }
  }
}

}  // namespace

void ShardTensors(const ParameterLayout& whole_layout, const float* whole, const ParameterLayout& shard_layout,
                  int tp_rank, int /*tp*/, float* shard) {
  ForEachShardRun(whole_layout, shard_layout, tp_rank, [&](int64_t from, int64_t to, int64_t n) {
    std::memcpy(shard + to, whole + from, n * sizeof(float));
  });
}

void UnshardTensors(const ParameterLayout& whole_layout, const ParameterLayout& shard_layout, int tp,
                    const float* gathered, float* whole) {
  for (int r = 0; r < tp; ++r) {
    const float* shard = gathered + int64_t{r} * shard_layout.total();
    ForEachShardRun(whole_layout, shard_layout, r, [&](int64_t to, int64_t from, int64_t n) {
      std::memcpy(whole + to, shard + from, n * sizeof(float));
    });
  }
}

absl::Status GatherTensors(Communicator& group, const ParameterLayout& whole_layout,
                           const ParameterLayout& shard_layout, const float* shard, float* whole) {
  std::vector<float> gathered(static_cast<size_t>(shard_layout.total()) * group.size());
  LOOM_RETURN_IF_ERROR(group.AllGather(shard, shard_layout.total(), gathered.data()));
  UnshardTensors(whole_layout, shard_layout, group.size(), gathered.data(), whole);
  return absl::OkStatus();
}

absl::StatusOr<double> VocabParallelCrossEntropy(Communicator& group, const float* logits,
                                                 const int32_t* targets, int64_t rows, int64_t local_vocab,
                                                 int64_t vocab_begin, float grad_scale, float* dlogits) {
  namespace k = kernels::cpu;
  constexpr int64_t kRowGrain = 8;
  // 1. Each row's max over the whole vocabulary (every rank's local max, gathered).
  std::vector<float> local_max(rows), maxes(static_cast<size_t>(rows) * group.size());
  k::ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* l = logits + r * local_vocab;
      local_max[r] = *std::max_element(l, l + local_vocab);
    }
  });
  LOOM_RETURN_IF_ERROR(group.AllGather(local_max.data(), rows, maxes.data()));
  std::vector<float> row_max(rows);
  for (int64_t r = 0; r < rows; ++r) {
    float m = maxes[r];
    for (int g = 1; g < group.size(); ++g) m = std::max(m, maxes[g * rows + r]);
    row_max[r] = m;
  }
  // 2. Σ exp(logit − max) and the target's (logit − max), summed over the ranks: [rows][2].
  std::vector<double> sums(2 * static_cast<size_t>(rows), 0.0);
  k::ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (targets[r] == k::kIgnoreTarget) continue;
      const float* l = logits + r * local_vocab;
      float s = 0;
      for (int64_t v = 0; v < local_vocab; ++v) s += k::FastExp(l[v] - row_max[r]);
      sums[2 * r] = s;
      const int64_t t = targets[r] - vocab_begin;
      if (t >= 0 && t < local_vocab) sums[2 * r + 1] = l[t] - row_max[r];
    }
  });
  LOOM_RETURN_IF_ERROR(group.AllReduceSum(sums.data(), 2 * rows));
  // 3. Loss and gradient for this rank's columns.
  double loss = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] != k::kIgnoreTarget) loss += std::log(sums[2 * r]) - sums[2 * r + 1];
  }
  if (dlogits != nullptr) {
    k::ParallelFor(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* d = dlogits + r * local_vocab;
        if (targets[r] == k::kIgnoreTarget) {
          std::fill(d, d + local_vocab, 0.0f);
          continue;
        }
        const float* l = logits + r * local_vocab;
        const float shift = row_max[r] + static_cast<float>(std::log(sums[2 * r]));
        for (int64_t v = 0; v < local_vocab; ++v) d[v] = grad_scale * k::FastExp(l[v] - shift);
        const int64_t t = targets[r] - vocab_begin;
        if (t >= 0 && t < local_vocab) d[t] -= grad_scale;
      }
    });
  }
  return loss;
}

absl::StatusOr<double> TensorParallelGradNorm(Communicator& group, const ParameterLayout& shard_layout,
                                              const float* grads) {
  double split = 0, replicated = 0;
  for (const ParamTensor& t : shard_layout.tensors()) {
    const double squares = kernels::cpu::SumSquares(grads + t.offset, t.size);
    (SplitOf(t.name) == TensorSplit::kReplicated ? replicated : split) += squares;
  }
  LOOM_RETURN_IF_ERROR(group.AllReduceSum(&split, 1));
  return std::sqrt(split + replicated);
}

}  // namespace loom::engine
