#include "worker/engine/model/row_scores.h"

#include <algorithm>

#include "kernels/cpu/log_probs.h"

namespace loom::engine {

void FillCompletionRow(const std::vector<int32_t>& prompt, const std::vector<int32_t>& completion,
                       const std::vector<uint8_t>& mask, int seq_len, int32_t pad_id, int32_t* inputs,
                       int32_t* targets) {
  std::fill(inputs, inputs + seq_len, pad_id);
  std::fill(targets, targets + seq_len, data::kIgnoreIndex);
  const size_t n = std::min(prompt.size() + completion.size(), static_cast<size_t>(seq_len) + 1);
  auto token = [&](size_t i) { return i < prompt.size() ? prompt[i] : completion[i - prompt.size()]; };
  for (size_t t = 0; t + 1 < n; ++t) {
    inputs[t] = token(t);
    const size_t next = t + 1;
    if (next >= prompt.size() && mask[next - prompt.size()]) targets[t] = token(next);
  }
}

int LastTargetPosition(const data::TokenBatch& batch, int row) {
  for (int t = batch.seq_len - 1; t >= 0; --t) {
    if (batch.targets[static_cast<size_t>(row) * batch.seq_len + t] != data::kIgnoreIndex) return t;
  }
  return -1;
}

std::vector<double> RowLogProbSums(Transformer& model, const data::TokenBatch& batch, float** logits_out) {
  float* logits = model.Forward(batch);
  if (logits_out != nullptr) *logits_out = logits;
  std::vector<float> lp(batch.tokens());
  kernels::cpu::TokenLogProbs(logits, batch.targets.data(), batch.tokens(), model.config().vocab, lp.data());
  std::vector<double> sums(batch.batch_size, 0.0);
  for (int r = 0; r < batch.batch_size; ++r) {
    for (int t = 0; t < batch.seq_len; ++t) sums[r] += lp[static_cast<size_t>(r) * batch.seq_len + t];
  }
  return sums;
}

void RowLogProbSumsBackward(Transformer& model, const data::TokenBatch& batch, float* logits,
                            const std::vector<double>& row_grad) {
  // Every target token of a row shares the row's gradient d loss / d (summed log-prob).
  std::vector<float> grad(batch.tokens());
  for (int r = 0; r < batch.batch_size; ++r) {
    std::fill(grad.begin() + static_cast<size_t>(r) * batch.seq_len,
              grad.begin() + static_cast<size_t>(r + 1) * batch.seq_len, static_cast<float>(row_grad[r]));
  }
  kernels::cpu::TokenLogProbsBackward(logits, batch.targets.data(), grad.data(), batch.tokens(), model.config().vocab,
                                      logits);
  model.Backward(logits);
}

std::vector<double> RowRewards(Transformer& model, const data::TokenBatch& batch, int32_t reward_token) {
  const float* logits = model.Forward(batch);
  const int64_t vocab = model.config().vocab;
  std::vector<double> rewards(batch.batch_size, 0.0);
  for (int r = 0; r < batch.batch_size; ++r) {
    const int t = LastTargetPosition(batch, r);
    if (t >= 0) rewards[r] = logits[(int64_t{r} * batch.seq_len + t) * vocab + reward_token];
  }
  return rewards;
}

std::vector<double> RewardScorer::Score(const std::vector<const std::vector<int32_t>*>& prompts,
                                        const std::vector<std::vector<int32_t>>& completions, int32_t pad_id) const {
  std::vector<double> out;
  constexpr size_t kRows = 16;
  for (size_t first = 0; first < completions.size(); first += kRows) {
    const size_t count = std::min(kRows, completions.size() - first);
    data::TokenBatch b;
    b.Reset(static_cast<int>(count), seq_len);
    for (size_t r = 0; r < count; ++r) {
      const std::vector<int32_t>& c = completions[first + r];
      FillCompletionRow(*prompts[first + r], c, std::vector<uint8_t>(c.size(), 1), seq_len, pad_id,
                        &b.inputs[r * seq_len], &b.targets[r * seq_len]);
    }
    const std::vector<double> scores = RowRewards(*model, b, reward_token);
    out.insert(out.end(), scores.begin(), scores.end());
  }
  return out;
}

}  // namespace loom::engine
